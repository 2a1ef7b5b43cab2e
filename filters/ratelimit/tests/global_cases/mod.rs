//! ratelimit's global mode, one table run natively (native_global.rs) and
//! against `dist/ratelimit.wasm` in the harness (harness_global.rs): the
//! rate-limit service's answers are scripted per case (OK, OVER_LIMIT,
//! errors, timeouts, garbage). Real Envoy runs global mode against the real
//! meshguard-rls and Redis (tests/tests/ratelimit_global.rs).

#![allow(dead_code)]

use meshguard_ratelimit::rls;

/// A local pre-check on /flood (2 a minute per client IP) and two global
/// rules: per user on /api, per path on /api/expensive.
pub const CONFIG: &str = r#"{
  "rules": [
    {"name": "flood", "match": {"paths": [{"prefix": "/flood"}]}, "key": ["client_ip"],
     "limit": {"requests": 2, "per": "minute"}},
    {"name": "api-user", "match": {"paths": [{"prefix": "/api"}]}, "key": ["header"], "global": true},
    {"name": "expensive", "match": {"paths": [{"prefix": "/api/expensive"}]}, "key": ["path"], "global": true},
    {"name": "flood-global", "match": {"paths": [{"prefix": "/flood"}]}, "global": true}
  ],
  "global": {"cluster": "rls", "domain": "shop", "timeout_ms": 50},
  "client_ip": {"trusted_hops": 1},
  "response_headers": {"on_allowed": true}
}"#;

/// What the scripted service does with the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// OK, with a response header.
    Ok,
    /// OVER_LIMIT on the first descriptor, reset in `reset` seconds.
    OverLimit { reset: u64 },
    /// OVER_LIMIT without statuses (as Limitador), reset in a header.
    OverLimitHeaderOnly,
    /// A gRPC error status (4: DEADLINE_EXCEEDED, as Envoy for a timeout;
    /// 14: UNAVAILABLE).
    Error(u32),
    /// Status OK, but the message is not a RateLimitResponse.
    Garbage,
    /// No call expected.
    NotCalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Forwarded; the response carries this header (name, value) if any.
    Allowed(Option<(&'static str, &'static str)>),
    /// Answered locally: status and `retry-after`.
    Refused(u16, Option<&'static str>),
}

pub struct Case {
    pub name: &'static str,
    pub path: &'static str,
    pub user: Option<&'static str>,
    pub service: Service,
    /// Descriptors the call must carry (rule names, in order).
    pub asks: &'static [&'static str],
    /// Rule names the call must not carry.
    pub never: &'static [&'static str],
    pub expect: Expect,
}

impl meshguard_stage::testing::NamedCase for Case {
    fn name(&self) -> &str {
        self.name
    }
}

impl Case {
    pub fn request(&self) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), self.path.to_string()),
            (":authority".to_string(), "shop.example.com".to_string()),
            ("x-forwarded-for".to_string(), "198.51.100.7".to_string()),
        ];
        if let Some(u) = self.user {
            h.push(("x-user-id".into(), u.into()));
        }
        h
    }

    /// The scripted answer: Ok(message) or Err(gRPC status).
    pub fn answer(&self) -> Result<Vec<u8>, u32> {
        match self.service {
            Service::Ok => Ok(response(1, &[], &[("x-ratelimit-remaining", "7")])),
            Service::OverLimit { reset } => Ok(response(
                2,
                &[(2, reset)],
                &[("x-ratelimit-limit", "10, 10;w=60")],
            )),
            Service::OverLimitHeaderOnly => Ok(response(2, &[], &[("x-ratelimit-reset", "17")])),
            Service::Error(s) => Err(s),
            Service::Garbage => Ok(vec![0x12, 0xff]),
            Service::NotCalled => Err(u32::MAX),
        }
    }

    /// Problems with the call the filter made (its request message).
    pub fn check_call(&self, message: Option<&[u8]>) -> Vec<String> {
        let mut p = Vec::new();
        match (self.service, message) {
            (Service::NotCalled, Some(_)) => p.push("called the service".into()),
            (Service::NotCalled, None) => {}
            (_, None) => p.push("did not call the service".into()),
            (_, Some(m)) => {
                let text = String::from_utf8_lossy(m);
                if !text.contains("shop") {
                    p.push("no domain".into());
                }
                for r in self.asks {
                    if !text.contains(r) {
                        p.push(format!("descriptor for `{r}` missing: {text:?}"));
                    }
                }
                for r in self.never {
                    if text.contains(r) {
                        p.push(format!("descriptor for `{r}` sent: {text:?}"));
                    }
                }
                if let Some(u) = self.user {
                    if self.asks.contains(&"api-user")
                        && !(text.contains("x_user_id") && text.contains(u))
                    {
                        p.push(format!("no x_user_id={u} entry: {text:?}"));
                    }
                }
            }
        }
        p
    }
}

/// A RateLimitResponse: overall code, statuses (code, reset seconds),
/// response headers to add. Hand-encoded (protobuf field numbers of
/// envoy.service.ratelimit.v3), independent of the filter's decoder.
pub fn response(code: u8, statuses: &[(u8, u64)], headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0x08, code];
    for (c, reset) in statuses {
        let dur = [0x08, *reset as u8];
        let mut st = vec![0x08, *c, 0x18, 0, 0x22, dur.len() as u8];
        st.extend_from_slice(&dur);
        b.extend_from_slice(&[0x12, st.len() as u8]);
        b.extend_from_slice(&st);
    }
    for (k, v) in headers {
        let mut hv = vec![0x0a, k.len() as u8];
        hv.extend_from_slice(k.as_bytes());
        hv.extend_from_slice(&[0x12, v.len() as u8]);
        hv.extend_from_slice(v.as_bytes());
        b.extend_from_slice(&[0x1a, hv.len() as u8]);
        b.extend_from_slice(&hv);
    }
    let _ = rls::SERVICE;
    b
}

pub const CASES: &[Case] = &[
    Case {
        name: "service says OK: forwarded with its headers",
        path: "/api/items",
        user: Some("bob"),
        service: Service::Ok,
        asks: &["api-user"],
        never: &[],
        expect: Expect::Allowed(Some(("x-ratelimit-remaining", "7"))),
    },
    Case {
        name: "two global rules match: only the first is asked (it is descriptors[0])",
        path: "/api/expensive",
        user: Some("bob"),
        service: Service::Ok,
        asks: &["api-user"],
        never: &["expensive"],
        expect: Expect::Allowed(Some(("x-ratelimit-remaining", "7"))),
    },
    Case {
        name: "over the limit: 429 with the service's reset",
        path: "/api/items",
        user: Some("bob"),
        service: Service::OverLimit { reset: 30 },
        asks: &["api-user"],
        never: &[],
        expect: Expect::Refused(429, Some("30")),
    },
    Case {
        name: "over the limit, reset from the service's header (Limitador)",
        path: "/api/items",
        user: Some("carol"),
        service: Service::OverLimitHeaderOnly,
        asks: &["api-user"],
        never: &[],
        expect: Expect::Refused(429, Some("17")),
    },
    Case {
        name: "service unavailable: fail open by default",
        path: "/api/items",
        user: Some("bob"),
        service: Service::Error(14),
        asks: &["api-user"],
        never: &[],
        expect: Expect::Allowed(None),
    },
    Case {
        name: "service timed out: fail open by default",
        path: "/api/items",
        user: Some("bob"),
        service: Service::Error(4),
        asks: &["api-user"],
        never: &[],
        expect: Expect::Allowed(None),
    },
    Case {
        name: "garbage answer: fail open by default",
        path: "/api/items",
        user: Some("bob"),
        service: Service::Garbage,
        asks: &["api-user"],
        never: &[],
        expect: Expect::Allowed(None),
    },
    Case {
        name: "key missing: the rule is skipped, no call",
        path: "/api/items",
        user: None,
        service: Service::NotCalled,
        asks: &[],
        never: &[],
        expect: Expect::Allowed(None),
    },
    Case {
        name: "no global rule matches: no call",
        path: "/other",
        user: Some("bob"),
        service: Service::NotCalled,
        asks: &[],
        never: &[],
        expect: Expect::Allowed(None),
    },
    // The local pre-check (2 a minute per client IP on /flood): the first
    // two ask the service, the third is refused without a call.
    // Both a local and a global rule: the response shows the local rule's
    // X-RateLimit-* (the filter's own numbers).
    Case {
        name: "flood 1: local allows, service asked",
        path: "/flood",
        user: None,
        service: Service::Ok,
        asks: &["flood-global"],
        never: &[],
        expect: Expect::Allowed(Some(("x-ratelimit-remaining", "1"))),
    },
    Case {
        name: "flood 2: local allows, service asked",
        path: "/flood",
        user: None,
        service: Service::Ok,
        asks: &["flood-global"],
        never: &[],
        expect: Expect::Allowed(Some(("x-ratelimit-remaining", "0"))),
    },
    Case {
        name: "flood 3: local pre-check refuses, no call",
        path: "/flood",
        user: None,
        service: Service::NotCalled,
        asks: &[],
        never: &[],
        expect: Expect::Refused(429, None),
    },
];
