//! Facts one stage hands to the stages after it, typed. Within one module
//! they travel in memory; between separate modules they travel as the
//! headers/properties defined in `meshguard_common::contract` (see
//! [`Facts::contract_headers`]).

use std::rc::Rc;

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
}
