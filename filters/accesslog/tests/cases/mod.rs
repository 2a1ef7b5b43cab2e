//! One table of accesslog cases, run natively through the pipeline on the
//! fake proxy (native_cases.rs) and against the compiled
//! `dist/accesslog.wasm` in wasm-test-harness (harness_cases.rs). Each case
//! sets the request/response headers and the log-phase properties the
//! proxy would provide, and checks the record's fields (JSON pointers) or
//! that no record was written.

#![allow(dead_code)]

use meshguard_stage::testing::NamedCase;

/// The demo config (deploy/local/filters.yaml's accesslog entry is this).
pub const CONFIG: &str = r#"{
  "tags": {"environment": "test", "cluster": "local", "namespace": "demo", "workload": "envoy"},
  "query": {"mode": "redact", "redact_params": ["token", "access_token", "password"]},
  "headers": {"request": ["x-tenant", "authorization", "x-user-id"], "response": ["content-type", "set-cookie"]},
  "sampling": {"success_rate": 1.0, "exclude_paths": ["/healthz", "/internal/*"]}
}"#;

pub const SAMPLE_NONE: &str = r#"{"sampling": {"success_rate": 0.0}}"#;
pub const OMIT_SENSITIVE: &str = r#"{"query": {"mode": "drop"}, "headers": {"request": ["authorization", "x-tenant"], "sensitive_mode": "omit"}}"#;

/// A property value as the proxy encodes it (REFERENCE §7).
#[derive(Debug, Clone, Copy)]
pub enum Prop {
    Int(i64),
    Str(&'static str),
    /// A timestamp or duration, in nanoseconds.
    Nanos(i64),
    Raw(&'static [u8]),
}

impl Prop {
    pub fn bytes(self) -> Vec<u8> {
        match self {
            Prop::Int(v) | Prop::Nanos(v) => v.to_le_bytes().to_vec(),
            Prop::Str(s) => s.as_bytes().to_vec(),
            Prop::Raw(b) => b.to_vec(),
        }
    }
}

pub enum Want {
    /// A record whose fields at these JSON pointers equal these JSON values;
    /// `absent` pointers must not exist.
    Record {
        fields: &'static [(&'static str, &'static str)],
        absent: &'static [&'static str],
    },
    /// No record; this counter went up.
    Skipped(&'static str),
}

pub struct Case {
    pub name: &'static str,
    pub config: &'static str,
    pub request: &'static [(&'static str, &'static str)],
    pub response: &'static [(&'static str, &'static str)],
    pub props: &'static [(&'static [&'static str], Prop)],
    pub want: Want,
}

impl NamedCase for Case {
    fn name(&self) -> &str {
        self.name
    }
}

/// 2025-06-01T12:00:00.123Z
pub const START_NS: i64 = 1_748_779_200_123_000_000;

const OK: &[(&[&str], Prop)] = &[
    (&["request", "time"], Prop::Nanos(START_NS)),
    (&["request", "duration"], Prop::Nanos(12_345_678)),
    (&["response", "code"], Prop::Int(200)),
    (&["response", "flags"], Prop::Int(0)),
    (&["response", "code_details"], Prop::Str("via_upstream")),
    (&["request", "size"], Prop::Int(17)),
    (&["response", "size"], Prop::Int(512)),
    (&["request", "protocol"], Prop::Str("HTTP/1.1")),
    (&["upstream", "address"], Prop::Str("127.0.0.1:8081")),
    (&["cluster_name"], Prop::Str("demo_upstream")),
    (&["source", "address"], Prop::Str("127.0.0.1:50000")),
];

const GET: &[(&str, &str)] = &[
    (":method", "GET"),
    (":authority", "shop.example.com"),
    (":path", "/checkout?token=abc&x=1"),
    ("x-request-id", "rid-1"),
    ("user-agent", "curl/8"),
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("x-tenant", "acme"),
    ("authorization", "Bearer secret-token"),
];

const RESPONSE: &[(&str, &str)] = &[
    (":status", "200"),
    ("content-type", "application/json"),
    ("set-cookie", "sid=very-secret"),
    ("x-envoy-upstream-service-time", "7"),
];

pub const CASES: &[Case] = &[
    Case {
        name: "every field of a successful request",
        config: CONFIG,
        request: GET,
        response: RESPONSE,
        props: OK,
        want: Want::Record {
            fields: &[
                ("/schema", r#""meshguard.access.v1""#),
                ("/timestamp", r#""2025-06-01T12:00:00.123Z""#),
                ("/environment", r#""test""#),
                ("/cluster", r#""local""#),
                ("/namespace", r#""demo""#),
                ("/workload", r#""envoy""#),
                ("/request_id", r#""rid-1""#),
                ("/trace_id", r#""4bf92f3577b34da6a3ce929d0e0e4736""#),
                ("/span_id", r#""00f067aa0ba902b7""#),
                ("/method", r#""GET""#),
                ("/authority", r#""shop.example.com""#),
                ("/path", r#""/checkout?token=REDACTED&x=1""#),
                ("/protocol", r#""HTTP/1.1""#),
                ("/status", "200"),
                ("/response_flags", "null"),
                ("/response_code_details", r#""via_upstream""#),
                ("/bytes_received", "17"),
                ("/bytes_sent", "512"),
                ("/duration_ms", "12.345"),
                ("/upstream_service_time_ms", "7"),
                ("/upstream_host", r#""127.0.0.1:8081""#),
                ("/upstream_cluster", r#""demo_upstream""#),
                ("/downstream_address", r#""127.0.0.1:50000""#),
                ("/user_agent", r#""curl/8""#),
                ("/x_forwarded_for", "null"),
                ("/identity", "null"),
                ("/variants", "null"),
                ("/rate_limit", "null"),
                ("/request_headers", r#"{"x-tenant":"acme","authorization":"[REDACTED]"}"#),
                ("/response_headers", r#"{"content-type":"application/json","set-cookie":"[REDACTED]"}"#),
            ],
            absent: &["/invalid_utf8"],
        },
    },
    Case {
        name: "sensitive headers omitted, query dropped",
        config: OMIT_SENSITIVE,
        request: GET,
        response: RESPONSE,
        props: OK,
        want: Want::Record {
            fields: &[
                ("/path", r#""/checkout""#),
                ("/request_headers", r#"{"x-tenant":"acme"}"#),
                ("/environment", r#""""#),
            ],
            absent: &["/response_headers"],
        },
    },
    Case {
        name: "facts from filter state (the inter-filter contract)",
        config: CONFIG,
        request: GET,
        response: RESPONSE,
        props: &[
            (&["response", "code"], Prop::Int(200)),
            // pairs: 2 × (len, len), then "subject\0alice\0issuer\0idp\0"
            (
                &["meshguard.identity"],
                Prop::Raw(b"\x02\x00\x00\x00\x07\x00\x00\x00\x05\x00\x00\x00\x06\x00\x00\x00\x03\x00\x00\x00subject\0alice\0issuer\0idp\0"),
            ),
            (
                &["meshguard.variants"],
                Prop::Raw(b"\x01\x00\x00\x00\x08\x00\x00\x00\x09\x00\x00\x00checkout\0treatment\0"),
            ),
            (&["meshguard.ratelimit"], Prop::Str("shadow_limited")),
        ],
        want: Want::Record {
            fields: &[
                ("/identity", r#"{"subject":"alice","issuer":"idp"}"#),
                ("/variants", r#"{"checkout":"treatment"}"#),
                ("/rate_limit", r#""shadow_limited""#),
                // No request.time: the proxy's clock stands in.
                ("/duration_ms", "null"),
            ],
            absent: &[],
        },
    },
    Case {
        name: "malformed filter state is ignored",
        config: CONFIG,
        request: GET,
        response: RESPONSE,
        props: &[
            (&["response", "code"], Prop::Int(200)),
            (&["meshguard.variants"], Prop::Raw(b"\x05\x00")),
            (&["meshguard.ratelimit"], Prop::Str("maybe")),
        ],
        want: Want::Record {
            fields: &[("/variants", "null"), ("/rate_limit", "null")],
            absent: &[],
        },
    },
    Case {
        name: "upstream failure: flags named like Envoy's %RESPONSE_FLAGS%",
        config: SAMPLE_NONE,
        request: &[(":method", "POST"), (":path", "/pay"), ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
        response: &[(":status", "503")],
        props: &[
            (&["response", "code"], Prop::Int(503)),
            (&["response", "flags"], Prop::Int(0x20 | 0x8000)),
            (&["response", "code_details"], Prop::Str("upstream_reset_before_response_started{connection_failure}")),
        ],
        want: Want::Record {
            fields: &[
                ("/status", "503"),
                ("/response_flags", r#""UF,URX""#),
                ("/trace_id", r#""80f198ee56343ba864fe8b2a57d3eff7""#),
                ("/span_id", r#""e457b5a2e4d86bd1""#),
                ("/path", r#""/pay""#),
            ],
            absent: &["/request_headers"],
        },
    },
    Case {
        name: "client error kept although successes are sampled out",
        config: SAMPLE_NONE,
        request: &[(":path", "/missing"), ("x-request-id", "r")],
        response: &[(":status", "404")],
        props: &[(&["response", "code"], Prop::Int(404))],
        want: Want::Record {
            fields: &[("/status", "404"), ("/response_flags", "null")],
            absent: &[],
        },
    },
    Case {
        name: "no response at all is an error",
        config: SAMPLE_NONE,
        request: &[(":path", "/reset")],
        response: &[],
        props: &[(&["response", "code"], Prop::Int(0))],
        want: Want::Record {
            fields: &[("/status", "null")],
            absent: &[],
        },
    },
    Case {
        name: "success sampled out",
        config: SAMPLE_NONE,
        request: &[(":path", "/ok"), ("x-request-id", "r")],
        response: &[(":status", "200")],
        props: &[(&["response", "code"], Prop::Int(200))],
        want: Want::Skipped("meshguard_accesslog_sampled_out"),
    },
    Case {
        name: "health check excluded",
        config: CONFIG,
        request: &[(":path", "/healthz?full=1")],
        response: &[(":status", "500")],
        props: &[(&["response", "code"], Prop::Int(500))],
        want: Want::Skipped("meshguard_accesslog_excluded"),
    },
    Case {
        name: "excluded prefix",
        config: CONFIG,
        request: &[(":path", "/internal/metrics")],
        response: &[(":status", "200")],
        props: OK,
        want: Want::Skipped("meshguard_accesslog_excluded"),
    },
    Case {
        name: "hostile values stay inside their strings",
        config: CONFIG,
        request: &[
            (":path", "/a\"b\\c"),
            ("user-agent", "x\u{2028}y\u{2029}z\u{7f}\"}{"),
            ("x-tenant", "\t\u{1}\u{1f}"),
            ("x-request-id", "\",\"status\":999,\""),
        ],
        response: &[(":status", "200")],
        props: &[(&["response", "code"], Prop::Int(200))],
        want: Want::Record {
            fields: &[
                ("/path", r#""/a\"b\\c""#),
                ("/user_agent", r#""x\u2028y\u2029z\u007f\"}{""#),
                ("/request_headers", r#"{"x-tenant":"\t\u0001\u001f"}"#),
                ("/request_id", r#""\",\"status\":999,\"""#),
                ("/status", "200"),
            ],
            absent: &["/invalid_utf8"],
        },
    },
    Case {
        name: "repeated allow-listed headers joined like Envoy",
        config: CONFIG,
        request: &[(":path", "/"), ("x-tenant", "a"), ("X-Tenant", "b")],
        response: &[(":status", "200")],
        props: &[(&["response", "code"], Prop::Int(200))],
        want: Want::Record {
            fields: &[("/request_headers", r#"{"x-tenant":"a,b"}"#)],
            absent: &[],
        },
    },
];

/// Problems with one rendered line against the case.
pub fn check(
    case: &Case,
    line: Option<&str>,
    skipped_counter: impl Fn(&str) -> i64,
) -> Vec<String> {
    let mut problems = Vec::new();
    match (&case.want, line) {
        (Want::Skipped(counter), None) => {
            if skipped_counter(counter) != 1 {
                problems.push(format!("{counter} = {}, want 1", skipped_counter(counter)));
            }
        }
        (Want::Skipped(_), Some(line)) => problems.push(format!("logged, want skipped: {line}")),
        (Want::Record { .. }, None) => problems.push("no record".into()),
        (Want::Record { fields, absent }, Some(line)) => {
            if line.contains('\n') {
                problems.push("line contains a newline".into());
            }
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => return vec![format!("not JSON ({e}): {line}")],
            };
            for (ptr, want) in fields.iter() {
                let want: serde_json::Value = serde_json::from_str(want).expect("case JSON");
                match v.pointer(ptr) {
                    Some(got) if *got == want => {}
                    got => problems.push(format!("{ptr}: got {got:?}, want {want}")),
                }
            }
            for ptr in absent.iter() {
                if v.pointer(ptr).is_some() {
                    problems.push(format!("{ptr} present, want absent"));
                }
            }
        }
    }
    problems
}
