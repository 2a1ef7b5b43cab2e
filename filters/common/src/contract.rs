//! The contract between meshguard filters: how one filter's decision reaches
//! the others (and the access log). Every header listed here is owned by
//! meshguard: a filter that owns it strips any client-sent copy before it
//! sets its own, so upstreams and later filters can trust it.

/// Default request header carrying an A/B experiment's variant. Each
/// experiment may name its own header; ab-routing strips every configured
/// variant header from the client request, then sets the assigned one.
pub const AB_VARIANT_HEADER: &str = "x-ab-variant";

/// Default QA override header (`x-ab-force: <variant>` or
/// `x-ab-force: exp=variant, exp2=variant`), honoured only together with the
/// secret header below; both are always stripped before the upstream.
pub const AB_FORCE_HEADER: &str = "x-ab-force";
pub const AB_FORCE_SECRET_HEADER: &str = "x-ab-force-secret";

/// Request header carrying the authenticated subject (by default the JWT
/// `sub`). The authn filter strips any client copy, in every case variant
/// and on every path, then sets it; later filters (ab-routing's sticky key,
/// ratelimit's key, accesslog) and upstreams read it.
pub const IDENTITY_HEADER: &str = "x-user-id";
