//! Facts one stage hands to the stages after it, typed. Within one module
//! they travel in memory; between separate modules they travel as the
//! headers/properties defined in `meshguard_common::contract` (see
//! [`Facts::contract_headers`]).

use std::rc::Rc;

use meshguard_common::contract;

use crate::host::Host;

/// Who the request is from, as an authentication stage established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Subject (`sub`, user id, key id).
    pub subject: Rc<str>,
    /// Who vouched for it (JWT issuer, auth service, HMAC key set).
    pub issuer: Option<Rc<str>>,
}

/// One experiment's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub experiment: Rc<str>,
    /// The request header that carries it (`x-ab-variant`).
    pub header: Rc<str>,
    pub variant: Rc<str>,
}

/// What a rate-limit stage decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitVerdict {
    Allowed,
    Limited,
    /// Over the limit, but the rule is in shadow mode: let through.
    ShadowLimited,
}

/// Per-request facts, filled by stages in chain order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub identity: Option<Identity>,
    pub variants: Vec<Variant>,
    pub rate_limit: Option<RateLimitVerdict>,
}

impl Facts {
    /// The request headers that carry these facts between separately
    /// deployed modules. Every header here is owned by meshguard (stripped
    /// from the client before it is set), so a later module can trust it.
    pub fn contract_headers(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        if let Some(id) = &self.identity {
            out.push((
                meshguard_common::contract::IDENTITY_HEADER,
                id.subject.as_ref(),
            ));
        }
        for v in &self.variants {
            out.push((v.header.as_ref(), v.variant.as_ref()));
        }
        out
    }

    /// Writes the variants to filter state ([`contract::VARIANTS_STATE`]) so
    /// modules in other VMs (a separate accesslog filter or access logger)
    /// see them. No-op without variants. False if the proxy refused.
    pub fn publish_variants(&self, host: &mut dyn Host) -> bool {
        publish_variants(
            host,
            self.variants
                .iter()
                .map(|v| (v.experiment.as_ref(), v.variant.as_ref())),
        )
    }

    /// Writes the identity to filter state ([`contract::IDENTITY_STATE`]).
    /// The hook for authn: call it where the identity is established.
    pub fn publish_identity(&self, host: &mut dyn Host) -> bool {
        let Some(id) = &self.identity else {
            return true;
        };
        let mut pairs = vec![("subject", id.subject.as_ref())];
        if let Some(issuer) = &id.issuer {
            pairs.push(("issuer", issuer.as_ref()));
        }
        host.set_property(
            &[contract::IDENTITY_STATE],
            &contract::encode_state_pairs(&pairs),
        )
    }

    /// Writes the rate-limit decision to filter state
    /// ([`contract::RATE_LIMIT_STATE`]). The hook for ratelimit.
    pub fn publish_rate_limit(&self, host: &mut dyn Host) -> bool {
        let Some(verdict) = self.rate_limit else {
            return true;
        };
        host.set_property(&[contract::RATE_LIMIT_STATE], verdict.as_str().as_bytes())
    }

    /// The facts other modules published in filter state (the accesslog
    /// reads this when no stage in its own chain recorded them): those in
    /// `which`, one host call each. Malformed values are ignored.
    pub fn from_filter_state(host: &dyn Host, which: FactKinds) -> Facts {
        let identity = which
            .identity
            .then(|| host.property(&[contract::IDENTITY_STATE]))
            .flatten()
            .and_then(|v| contract::decode_state_pairs(&v))
            .and_then(|pairs| {
                let get = |k: &str| {
                    pairs
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| Rc::from(v.as_str()))
                };
                Some(Identity {
                    subject: get("subject")?,
                    issuer: get("issuer"),
                })
            });
        let variants = which
            .variants
            .then(|| host.property(&[contract::VARIANTS_STATE]))
            .flatten()
            .and_then(|v| contract::decode_state_pairs(&v))
            .unwrap_or_default()
            .into_iter()
            .map(|(experiment, variant)| Variant {
                experiment: Rc::from(experiment),
                header: Rc::from(""),
                variant: Rc::from(variant),
            })
            .collect();
        let rate_limit = which
            .rate_limit
            .then(|| host.property(&[contract::RATE_LIMIT_STATE]))
            .flatten()
            .and_then(|v| RateLimitVerdict::parse(&v));
        Facts {
            identity,
            variants,
            rate_limit,
        }
    }
}

/// Which of the published facts to read from filter state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactKinds {
    pub identity: bool,
    pub variants: bool,
    pub rate_limit: bool,
}

impl FactKinds {
    pub const ALL: FactKinds = FactKinds {
        identity: true,
        variants: true,
        rate_limit: true,
    };

    pub fn any(self) -> bool {
        self.identity || self.variants || self.rate_limit
    }
}

/// Writes (experiment, variant) pairs to [`contract::VARIANTS_STATE`];
/// no-op (true) when there are none.
pub fn publish_variants<'a>(
    host: &mut dyn Host,
    variants: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> bool {
    if variants.clone().next().is_none() {
        return true;
    }
    let value = meshguard_common::headers::encode_pairs_from(
        variants.map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    host.set_property(&[contract::VARIANTS_STATE], &value)
}

impl RateLimitVerdict {
    /// The contract's spelling ([`contract::RATE_LIMIT_VALUES`]).
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitVerdict::Allowed => "allowed",
            RateLimitVerdict::Limited => "limited",
            RateLimitVerdict::ShadowLimited => "shadow_limited",
        }
    }

    pub fn parse(raw: &[u8]) -> Option<Self> {
        match raw {
            b"allowed" => Some(RateLimitVerdict::Allowed),
            b"limited" => Some(RateLimitVerdict::Limited),
            b"shadow_limited" => Some(RateLimitVerdict::ShadowLimited),
            _ => None,
        }
    }
}
