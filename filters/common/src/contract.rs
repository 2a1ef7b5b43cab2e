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

// ---------------------------------------------------------------------------
// Filter state: decisions that must reach modules in *other* VMs (a separate
// accesslog HTTP filter or `envoy.access_loggers.wasm` logger) without being
// forgeable by the client. A filter writes them with proxy-wasm
// `set_property([KEY], value)`; Envoy keeps them in the stream's filter state
// as `wasm.<KEY>` for the rest of the stream (access log phase included), and
// any module reads them with `get_property([KEY])`. A client cannot set filter
// state, so unlike headers nothing has to be stripped first.
//
// Values use the proxy-wasm pairs encoding (`headers::encode_pairs`): it is
// length-prefixed, so any bytes (a JWT subject with a newline) survive.

/// Authenticated identity: pairs `subject` → value and optionally `issuer` →
/// value. Written by authn (one line: `cx.facts.publish_identity(host)`).
pub const IDENTITY_STATE: &str = "meshguard.identity";

/// A/B assignments: pairs `experiment` → `variant`, in experiment order.
/// Written by ab-routing whenever it assigns at least one variant.
pub const VARIANTS_STATE: &str = "meshguard.variants";

/// Rate-limit decision: one of [`RATE_LIMIT_VALUES`], raw. Written by
/// ratelimit (one line: `cx.facts.publish_rate_limit(host)`).
pub const RATE_LIMIT_STATE: &str = "meshguard.ratelimit";

/// The values [`RATE_LIMIT_STATE`] may hold.
pub const RATE_LIMIT_VALUES: [&str; 3] = ["allowed", "limited", "shadow_limited"];

/// The part of a filter's shared-data keys that names its plugin:
/// `<16 hex digits>.` from the plugin's name (Envoy's `plugin_name`
/// property: the Wasm filter config's `name`; under Istio the WasmPlugin's
/// `<namespace>.<name>`), or empty when the name is unknown. Istio gives
/// every WasmPlugin the same empty `vm_id`, so all plugins on a proxy share
/// one shared-data space: without this, two authn plugins would read each
/// other's key sets and two ratelimit plugins each other's buckets. Stable
/// across config changes of one plugin (the key count stays bounded).
/// FNV-1a: the name is the operator's, nothing to defend against.
pub fn plugin_scope(plugin_name: Option<&[u8]>) -> String {
    match plugin_name {
        Some(name) if !name.is_empty() => {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in name {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("{h:016x}.")
        }
        _ => String::new(),
    }
}

/// Encodes (name, value) pairs for a filter-state key.
pub fn encode_state_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    crate::headers::encode_pairs(pairs)
}

/// Decodes a filter-state value written by [`encode_state_pairs`]; `None`
/// if it is malformed (never trust a value blindly, even filter state).
pub fn decode_state_pairs(value: &[u8]) -> Option<Vec<(String, String)>> {
    let view = crate::headers::PairsView::parse(value)?;
    Some(
        view.iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_scope_names_the_plugin_or_nothing() {
        let a = plugin_scope(Some(b"shop.strict"));
        assert_eq!(a.len(), 17);
        assert!(a.ends_with('.'));
        assert_eq!(a, plugin_scope(Some(b"shop.strict")));
        assert_ne!(a, plugin_scope(Some(b"shop.loose")));
        assert_eq!(plugin_scope(None), "");
        assert_eq!(plugin_scope(Some(b"")), "");
    }

    #[test]
    fn state_pairs_round_trip_any_bytes() {
        let pairs = [("subject", "a\nb\0c"), ("issuer", ""), ("x", "\u{2028}")];
        let enc = encode_state_pairs(&pairs);
        let dec = decode_state_pairs(&enc).unwrap();
        let want: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(dec, want);
        assert_eq!(decode_state_pairs(b"\x05\x00"), None);
    }
}
