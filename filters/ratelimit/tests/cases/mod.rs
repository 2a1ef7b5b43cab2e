//! One table of ratelimit cases, run natively through the pipeline on the
//! fake proxy with a test clock (native_cases.rs) and against the compiled
//! `dist/ratelimit.wasm` in wasm-test-harness with the harness's clock
//! (harness_cases.rs). Rate limiting is state over time, so a case is a
//! script: requests with what must happen to each, and waits. Every case
//! starts from empty shared data at the same instant.

#![allow(dead_code)]

use meshguard_stage::testing::NamedCase;

/// first-match; `trusted_hops: 1`; headers on allowed responses too.
pub const CONFIG: &str = r#"{
  "rules": [
    {"name": "login", "match": {"paths": [{"exact": "/login"}], "methods": ["POST"]},
     "key": ["client_ip"], "limit": {"requests": 2, "per": "minute"}},
    {"name": "api", "match": {"paths": [{"prefix": "/api"}]},
     "key": ["header"], "limit": {"requests": 1, "per": "second", "burst": 3}},
    {"name": "shadow", "match": {"paths": [{"prefix": "/shadow"}]},
     "key": ["client_ip"], "limit": {"requests": 1, "per": "hour"}, "shadow": true},
    {"name": "keyed", "match": {"paths": [{"prefix": "/fb"}]},
     "key": [{"header": "x-api-key"}], "limit": {"requests": 1, "per": "hour"},
     "when_key_missing": {"fallback": "anonymous"}},
    {"name": "org", "match": {"hosts": ["*.example.org"]}, "limit": {"requests": 1, "per": "hour"}},
    {"name": "plan", "match": {"paths": [{"prefix": "/plan"}], "headers": [{"name": "x-plan", "exact": "free"}]},
     "key": ["header", "path"], "limit": {"requests": 1, "per": "hour"}},
    {"name": "rest", "match": {"paths": [{"prefix": "/plan"}]},
     "key": ["client_ip"], "limit": {"requests": 1, "per": "hour"}}
  ],
  "client_ip": {"trusted_hops": 1},
  "response_headers": {"on_allowed": true},
  "decision_filter_state": true
}"#;

/// Every matching rule applies.
pub const CONFIG_ALL: &str = r#"{
  "apply": "all",
  "decision_filter_state": true,
  "rules": [
    {"name": "per-user", "key": ["header"], "limit": {"requests": 3, "per": "minute"}},
    {"name": "per-ip", "key": ["client_ip"], "limit": {"requests": 2, "per": "minute"}}
  ]
}"#;

/// The same rules, first match only.
pub const CONFIG_FIRST: &str = r#"{
  "rules": [
    {"name": "per-user", "key": ["header"], "limit": {"requests": 3, "per": "minute"}},
    {"name": "per-ip", "key": ["client_ip"], "limit": {"requests": 2, "per": "minute"}}
  ],
  "response_headers": {"ietf": false},
  "decision_filter_state": true
}"#;

/// The default: no decision in filter state (a host call per request that
/// only an accesslog in another module reads).
pub const CONFIG_QUIET: &str = r#"{
  "rules": [
    {"name": "per-user", "key": ["header"], "limit": {"requests": 1, "per": "minute"}}
  ]
}"#;

/// The filter state the request must leave (`meshguard.ratelimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Absent,
    Is(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// 200: forwarded (the test's upstream answers 200); else a local reply.
    pub status: u16,
    /// Response headers: `Some(v)` equals, `None` absent.
    pub headers: &'static [(&'static str, Option<&'static str>)],
    pub state: State,
}

#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// Request headers (pseudo-headers included), `source.address`, expectation.
    Send(&'static [(&'static str, &'static str)], &'static str, Want),
    /// The same request `n` times, each with the same expectation.
    Repeat(
        u32,
        &'static [(&'static str, &'static str)],
        &'static str,
        Want,
    ),
    /// Advance the clock (ms).
    Wait(u64),
}

pub struct Case {
    pub name: &'static str,
    pub config: &'static str,
    pub steps: &'static [Step],
}

impl NamedCase for Case {
    fn name(&self) -> &str {
        self.name
    }
}

const NO_RATE_HEADERS: &[(&str, Option<&str>)] = &[
    ("x-ratelimit-limit", None),
    ("x-ratelimit-remaining", None),
    ("ratelimit", None),
    ("retry-after", None),
];

pub const PASS_UNLIMITED: Want = Want {
    status: 200,
    headers: NO_RATE_HEADERS,
    state: State::Absent,
};
pub const ALLOWED: Want = Want {
    status: 200,
    headers: &[("retry-after", None)],
    state: State::Is("allowed"),
};
pub const LIMITED: Want = Want {
    status: 429,
    headers: &[("content-type", Some("application/json"))],
    state: State::Is("limited"),
};

const LOGIN: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/login"),
    (":authority", "shop"),
];
const LOGIN_XFF: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/login"),
    (":authority", "shop"),
    ("x-forwarded-for", "1.1.1.1, 203.0.113.9"),
];
const LOGIN_XFF_SPOOFED: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/login?next=/x"),
    (":authority", "shop"),
    ("x-forwarded-for", "9.9.9.9, 8.8.8.8,203.0.113.9"),
];
const LOGIN_XFF_OTHER: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/login"),
    (":authority", "shop"),
    ("x-forwarded-for", "203.0.113.10"),
];
const LOGIN_XFF_GARBAGE: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/login"),
    (":authority", "shop"),
    ("x-forwarded-for", "203.0.113.9, not-an-ip"),
];
const API_ALICE: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/api/items"),
    ("x-user-id", "alice"),
];
const API_BOB: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/api/items"),
    ("x-user-id", "bob"),
];
const API_ANON: &[(&str, &str)] = &[(":method", "GET"), (":path", "/api/items")];
const API_EMPTY_USER: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/api/items"),
    ("x-user-id", ""),
];

const A: &str = "10.0.0.1:40000";
const B: &str = "10.0.0.2:40000";

pub const CASES: &[Case] = &[
    Case {
        name: "login: two a minute per client IP, then 429 with Retry-After and both header styles",
        config: CONFIG,
        steps: &[
            Step::Send(LOGIN, A, Want {
                status: 200,
                headers: &[
                    ("x-ratelimit-limit", Some("2, 2;w=60")),
                    ("x-ratelimit-remaining", Some("1")),
                    ("x-ratelimit-reset", Some("30")),
                    ("ratelimit-policy", Some("\"login\";q=2;w=60")),
                    ("ratelimit", Some("\"login\";r=1;t=30")),
                ],
                state: State::Is("allowed"),
            }),
            Step::Send(LOGIN, A, Want {
                status: 200,
                headers: &[("x-ratelimit-remaining", Some("0")), ("x-ratelimit-reset", Some("30"))],
                state: State::Is("allowed"),
            }),
            Step::Send(LOGIN, A, Want {
                status: 429,
                headers: &[
                    ("retry-after", Some("30")),
                    ("x-ratelimit-limit", Some("2, 2;w=60")),
                    ("x-ratelimit-remaining", Some("0")),
                    ("x-ratelimit-reset", Some("30")),
                    ("ratelimit-policy", Some("\"login\";q=2;w=60")),
                    ("ratelimit", Some("\"login\";r=0;t=30")),
                    ("content-type", Some("application/json")),
                ],
                state: State::Is("limited"),
            }),
            // Another client has its own bucket.
            Step::Send(LOGIN, B, ALLOWED),
            Step::Wait(29_000),
            Step::Send(LOGIN, A, Want {
                status: 429,
                headers: &[("retry-after", Some("1"))],
                state: State::Is("limited"),
            }),
            Step::Wait(1_000),
            Step::Send(LOGIN, A, ALLOWED),
            Step::Send(LOGIN, A, LIMITED),
        ],
    },
    Case {
        name: "login: other methods and paths are not limited",
        config: CONFIG,
        steps: &[
            Step::Repeat(5, &[(":method", "GET"), (":path", "/login")], A, PASS_UNLIMITED),
            Step::Repeat(5, &[(":method", "POST"), (":path", "/login/x")], A, PASS_UNLIMITED),
        ],
    },
    Case {
        name: "x-forwarded-for: the entry the trusted hop appended is the client; a forged prefix changes nothing",
        config: CONFIG,
        steps: &[
            Step::Send(LOGIN_XFF, A, ALLOWED),
            Step::Send(LOGIN_XFF, B, ALLOWED),
            Step::Send(LOGIN_XFF_SPOOFED, A, LIMITED),
            Step::Send(LOGIN_XFF_OTHER, A, ALLOWED),
        ],
    },
    Case {
        name: "x-forwarded-for that is not an IP falls back to source.address",
        config: CONFIG,
        steps: &[
            Step::Send(LOGIN_XFF_GARBAGE, A, ALLOWED),
            Step::Send(LOGIN, A, ALLOWED),
            Step::Send(LOGIN_XFF_GARBAGE, A, LIMITED),
            // ... and 203.0.113.9 was never charged.
            Step::Send(LOGIN_XFF, A, ALLOWED),
        ],
    },
    Case {
        name: "IPv6 clients are keyed by their /64",
        config: CONFIG,
        steps: &[
            Step::Send(&[(":method", "POST"), (":path", "/login"), ("x-forwarded-for", "2001:db8:0:7::1")], A, ALLOWED),
            Step::Send(&[(":method", "POST"), (":path", "/login"), ("x-forwarded-for", "[2001:db8:0:7::2]:443")], A, ALLOWED),
            Step::Send(&[(":method", "POST"), (":path", "/login"), ("x-forwarded-for", "2001:db8:0:7:ffff::3")], A, LIMITED),
            Step::Send(&[(":method", "POST"), (":path", "/login"), ("x-forwarded-for", "2001:db8:0:8::1")], A, ALLOWED),
            // No XFF: the connection's IPv6 address.
            Step::Send(LOGIN, "[2001:db8:0:7::9]:5000", LIMITED),
        ],
    },
    Case {
        name: "api: per user (identity header), burst 3, then one a second",
        config: CONFIG,
        steps: &[
            Step::Send(API_ALICE, A, Want {
                status: 200,
                headers: &[
                    ("x-ratelimit-limit", Some("3, 1;w=1")),
                    ("x-ratelimit-remaining", Some("2")),
                    ("x-ratelimit-reset", Some("1")),
                ],
                state: State::Is("allowed"),
            }),
            Step::Repeat(2, API_ALICE, B, ALLOWED),
            Step::Send(API_ALICE, A, Want {
                status: 429,
                headers: &[("retry-after", Some("1")), ("ratelimit", Some("\"api\";r=0;t=1"))],
                state: State::Is("limited"),
            }),
            Step::Send(API_BOB, A, ALLOWED),
            Step::Wait(999),
            Step::Send(API_ALICE, A, LIMITED),
            Step::Wait(1),
            Step::Send(API_ALICE, A, ALLOWED),
            Step::Send(API_ALICE, A, LIMITED),
            Step::Wait(2_500),
            Step::Repeat(2, API_ALICE, A, ALLOWED),
            Step::Send(API_ALICE, A, LIMITED),
        ],
    },
    Case {
        name: "api: no identity (or an empty one) skips the rule",
        config: CONFIG,
        steps: &[
            Step::Repeat(6, API_ANON, A, PASS_UNLIMITED),
            Step::Repeat(6, API_EMPTY_USER, A, PASS_UNLIMITED),
        ],
    },
    Case {
        name: "shadow: over the limit is counted and passes",
        config: CONFIG,
        steps: &[
            Step::Send(&[(":path", "/shadow")], A, ALLOWED),
            Step::Repeat(3, &[(":path", "/shadow")], A, Want {
                status: 200,
                headers: NO_RATE_HEADERS,
                state: State::Is("shadow_limited"),
            }),
        ],
    },
    Case {
        name: "fallback key: requests without the key share one bucket",
        config: CONFIG,
        steps: &[
            Step::Send(&[(":path", "/fb")], A, ALLOWED),
            Step::Send(&[(":path", "/fb")], B, LIMITED),
            Step::Send(&[(":path", "/fb"), ("x-api-key", "k1")], B, ALLOWED),
            Step::Send(&[(":path", "/fb"), ("x-api-key", "k1")], A, LIMITED),
            // The literal fallback value is a different key from the header value
            // only by coincidence of spelling: it is the same bucket.
            Step::Send(&[(":path", "/fb"), ("x-api-key", "anonymous")], A, LIMITED),
        ],
    },
    Case {
        name: "a rule without key parts is one bucket for every request it matches",
        config: CONFIG,
        steps: &[
            Step::Send(&[(":path", "/x"), (":authority", "a.example.org")], A, ALLOWED),
            Step::Send(&[(":path", "/y"), (":authority", "B.Example.org:8080")], B, LIMITED),
            Step::Repeat(3, &[(":path", "/x"), (":authority", "example.org")], A, PASS_UNLIMITED),
        ],
    },
    Case {
        name: "first match: a header match picks the combined user+path key, else the next rule",
        config: CONFIG,
        steps: &[
            Step::Send(&[(":path", "/plan/a"), ("x-plan", "free"), ("x-user-id", "u1")], A, ALLOWED),
            Step::Send(&[(":path", "/plan/b?q=1"), ("x-plan", "free"), ("x-user-id", "u1")], A, ALLOWED),
            Step::Send(&[(":path", "/plan/a?q=2"), ("x-plan", "free"), ("x-user-id", "u1")], A, LIMITED),
            // Not free: the client_ip rule, a fresh bucket.
            Step::Send(&[(":path", "/plan/a"), ("x-plan", "paid"), ("x-user-id", "u1")], A, ALLOWED),
            Step::Send(&[(":path", "/plan/a"), ("x-user-id", "u1")], A, LIMITED),
            // Free but no user: `plan` is skipped, `rest` (client_ip) applies.
            Step::Send(&[(":path", "/plan/a"), ("x-plan", "free")], B, ALLOWED),
        ],
    },
    Case {
        name: "other spellings of a path match its rule and share its bucket: //, dot segments, escapes, ;params",
        config: CONFIG,
        steps: &[
            Step::Send(&[(":method", "POST"), (":path", "//login"), (":authority", "shop")], A, ALLOWED),
            Step::Send(&[(":method", "POST"), (":path", "/x/../login"), (":authority", "shop")], A, ALLOWED),
            Step::Send(&[(":method", "POST"), (":path", "/%6cogin;jsessionid=1"), (":authority", "shop")], A, LIMITED),
            Step::Send(&[(":method", "POST"), (":path", "/x/%2e%2e/login"), (":authority", "shop")], A, LIMITED),
            // The path part of a key: `/plan//a` is `/plan/a`'s bucket.
            Step::Send(&[(":path", "/plan/a"), ("x-plan", "free"), ("x-user-id", "u2")], B, ALLOWED),
            Step::Send(&[(":path", "/plan//a"), ("x-plan", "free"), ("x-user-id", "u2")], B, LIMITED),
            Step::Send(&[(":path", "/plan/./a/"), ("x-plan", "free"), ("x-user-id", "u2")], B, ALLOWED),
        ],
    },
    Case {
        name: "the decision reaches filter state only when decision_filter_state asks",
        config: CONFIG_QUIET,
        steps: &[
            Step::Send(&[(":path", "/"), ("x-user-id", "quiet")], A, Want {
                status: 200,
                headers: &[("retry-after", None)],
                state: State::Absent,
            }),
            Step::Send(&[(":path", "/"), ("x-user-id", "quiet")], A, Want {
                status: 429,
                headers: &[("retry-after", Some("60"))],
                state: State::Absent,
            }),
        ],
    },
    Case {
        name: "apply all: every matching rule spends; the first that refuses answers",
        config: CONFIG_ALL,
        steps: &[
            Step::Repeat(2, &[(":path", "/"), ("x-user-id", "alice")], A, ALLOWED),
            Step::Send(&[(":path", "/"), ("x-user-id", "alice")], A, Want {
                status: 429,
                headers: &[("ratelimit", Some("\"per-ip\";r=0;t=30")), ("x-ratelimit-limit", Some("2, 2;w=60"))],
                state: State::Is("limited"),
            }),
            Step::Send(&[(":path", "/"), ("x-user-id", "alice")], B, Want {
                status: 429,
                headers: &[("ratelimit", Some("\"per-user\";r=0;t=20"))],
                state: State::Is("limited"),
            }),
            // No user: per-user is skipped, per-ip still applies.
            Step::Send(&[(":path", "/")], B, ALLOWED),
        ],
    },
    Case {
        name: "apply first: only the first rule with a key applies; headers only on 429 by default",
        config: CONFIG_FIRST,
        steps: &[
            Step::Repeat(3, &[(":path", "/"), ("x-user-id", "alice")], A, Want {
                status: 200,
                headers: NO_RATE_HEADERS,
                state: State::Is("allowed"),
            }),
            Step::Send(&[(":path", "/"), ("x-user-id", "alice")], A, Want {
                status: 429,
                headers: &[("x-ratelimit-limit", Some("3, 3;w=60")), ("ratelimit", None), ("ratelimit-policy", None), ("retry-after", Some("20"))],
                state: State::Is("limited"),
            }),
            Step::Repeat(2, &[(":path", "/")], A, ALLOWED),
            Step::Send(&[(":path", "/")], A, LIMITED),
        ],
    },
];

/// What is wrong with one answer, given the case's expectation.
pub fn check(
    want: &Want,
    status: u16,
    headers: &[(String, String)],
    state: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if status != want.status {
        problems.push(format!("status {status}, want {}", want.status));
    }
    for (name, value) in want.headers {
        let got: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        match value {
            Some(v) if got != [*v] => problems.push(format!("{name}: {got:?}, want [{v}]")),
            None if !got.is_empty() => problems.push(format!("{name}: {got:?}, want none")),
            _ => {}
        }
    }
    let want_state = match want.state {
        State::Absent => None,
        State::Is(s) => Some(s),
    };
    if state != want_state {
        problems.push(format!("filter state {state:?}, want {want_state:?}"));
    }
    problems
}
