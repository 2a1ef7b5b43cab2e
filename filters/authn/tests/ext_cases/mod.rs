//! One table of authn's external-auth and HMAC cases, in a rule set that
//! also has JWT and public rules. Run natively (native_ext.rs), against
//! `dist/authn.wasm` in wasm-test-harness (harness_ext.rs) and through real
//! Envoy with the real demo auth service (tests/tests/authn_ext.rs).
//!
//! The auth service's answers follow demo/auth.py: native and harness runs
//! answer the callout with [`auth_service`], a copy of its rules; Envoy
//! calls the real one.

#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use meshguard_authn::msgsig;
use meshguard_authn::sf::Bare;
use meshguard_authn_crypto::HmacSha256;

pub const PARTNER_SECRET: &[u8] = b"partner-a shared secret, 32+ bytes long";
pub const AUTHORITY: &str = "shop.example.com";
pub const BODY: &str = "{\"hello\": \"world\"}";

/// The rule set: public `/health`, JWT on `/api`, the auth service on
/// `/legacy` (and an unreachable one on `/down`), signatures on `/signed`.
pub fn config(jwks: &Value) -> String {
    json!({
        "providers": [{
            "name": "demo",
            "issuer": "https://demo.meshguard.local",
            "audiences": ["shop"],
            "algorithms": ["RS256", "ES256"],
            "jwks": {"inline": jwks}
        }],
        "ext_auth": [
            {"name": "legacy", "cluster": "auth", "path_prefix": "/check", "timeout_ms": 300,
             "request_headers": ["authorization", "cookie"],
             "response_headers": ["x-user-id", "x-tenant"],
             "cache": {"allow_seconds": 30}},
            {"name": "down", "cluster": "auth_down", "timeout_ms": 300}
        ],
        "hmac": [{
            "name": "partners",
            "keys": [{"id": "partner-a", "secret": STANDARD.encode(PARTNER_SECRET)}],
            "max_body_bytes": 1024
        }],
        "rules": [
            {"match": {"path": {"prefix": "/health"}}, "requires": "public"},
            {"match": {"path": {"prefix": "/api"}}, "requires": {"any": ["demo"]}},
            {"match": {"path": {"prefix": "/legacy"}}, "requires": {"ext_auth": "legacy"}},
            {"match": {"path": {"prefix": "/down"}}, "requires": {"ext_auth": "down"}},
            {"match": {"path": {"prefix": "/signed"}}, "requires": {"hmac": "partners"}}
        ]
    })
    .to_string()
}

/// What demo/auth.py answers a check with these headers: (status,
/// headers, body), or `None` for "slow" (it answers after the timeout).
pub fn auth_service(headers: &[(String, String)]) -> Option<Answer> {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    let mut user = get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    if user.is_empty() {
        if let Some(c) = get("cookie") {
            for part in c.split(';') {
                if let Some(v) = part.trim().strip_prefix("session=") {
                    user = v.to_string();
                }
            }
        }
    }
    let json = |s: &str| ("content-type".to_string(), s.to_string());
    match user.as_str() {
        "slow" => None,
        "boom" => Some((
            500,
            vec![json("application/json")],
            "{\"error\": \"internal\"}\n".into(),
        )),
        "anonymous" => Some((
            200,
            vec![json("application/json")],
            "{\"user\": null}\n".into(),
        )),
        "blocked" => Some((
            403,
            vec![
                json("application/json"),
                ("x-internal-debug".into(), "leak".into()),
            ],
            "{\"error\": \"forbidden\"}\n".into(),
        )),
        "" => Some((
            401,
            vec![
                json("application/json"),
                ("www-authenticate".into(), "Bearer realm=\"demo\"".into()),
                ("x-internal-debug".into(), "leak".into()),
            ],
            "{\"error\": \"unauthenticated\"}\n".into(),
        )),
        u => Some((
            200,
            vec![
                json("application/json"),
                ("x-user-id".into(), u.to_string()),
                ("x-tenant".into(), "acme".into()),
            ],
            format!("{{\"user\": \"{u}\"}}\n"),
        )),
    }
}

/// An auth service's answer: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, String);

/// A local reply: status, `WWW-Authenticate`, body, every header.
pub type Reply = (u16, Option<String>, String, Vec<(String, String)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Is(&'static str),
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Reaches the upstream with these headers.
    Upstream(&'static [(&'static str, Want)]),
    /// Answered locally: status, and `WWW-Authenticate` contains this
    /// (`None`: absent).
    Reply(u16, Option<&'static str>),
}

/// What is changed after signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    Method,
    Authority,
    Path,
    Query,
    /// A covered header (`content-type`).
    Header,
    /// The body (the digest no longer matches).
    Body,
    /// `Signature-Input` is not a dictionary.
    MalformedInput,
    /// `Signature` holds no byte sequence.
    MalformedSignature,
    /// No signature fields at all.
    Unsigned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sig {
    pub keyid: &'static str,
    pub created: i64,
    pub expires: Option<i64>,
    pub alg: Option<&'static str>,
    pub components: &'static [&'static str],
    pub tamper: Tamper,
}

pub const FULL: &[&str] = &["@method", "@authority", "@path", "@query", "content-digest"];
const NO_BODY: &[&str] = &["@method", "@authority", "@path", "@query"];

const fn sig(components: &'static [&'static str], tamper: Tamper) -> Sig {
    Sig {
        keyid: "partner-a",
        created: 0,
        expires: None,
        alg: Some("hmac-sha256"),
        components,
        tamper,
    }
}

pub struct Case {
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub headers: &'static [(&'static str, &'static str)],
    pub body: Option<&'static str>,
    pub sig: Option<Sig>,
    pub expect: Expect,
}

impl meshguard_stage::testing::NamedCase for Case {
    fn name(&self) -> &str {
        self.name
    }
}

impl Case {
    /// The request as the client sends it (pseudo-headers first, signed at
    /// `now`), and its body.
    pub fn request(&self, now: i64) -> (Vec<(String, String)>, Vec<u8>) {
        let mut h: Vec<(String, String)> = vec![
            (":method".into(), self.method.into()),
            (":path".into(), self.path.into()),
            (":authority".into(), AUTHORITY.into()),
            (":scheme".into(), "http".into()),
        ];
        h.extend(
            self.headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut body = self.body.unwrap_or("").as_bytes().to_vec();
        let Some(s) = self.sig else {
            return (h, body);
        };
        if !body.is_empty() {
            h.push(("content-digest".into(), msgsig::digest_header(&body)));
        }
        let mut params = vec![("created".to_string(), Bare::Integer(now + s.created))];
        if let Some(e) = s.expires {
            params.push(("expires".into(), Bare::Integer(now + e)));
        }
        params.push(("keyid".into(), Bare::String(s.keyid.into())));
        if let Some(a) = s.alg {
            params.push(("alg".into(), Bare::String(a.into())));
        }
        let mac = HmacSha256::new(PARTNER_SECRET).unwrap();
        let (input, signature) = match msgsig::sign(&h, &mac, "sig1", s.components, &params) {
            Ok(x) => x,
            // A component listed twice has no signature base: send the
            // fields anyway, with a MAC of nothing.
            Err(_) => {
                let covered: Vec<(Bare, Vec<(String, Bare)>)> = s
                    .components
                    .iter()
                    .map(|c| (Bare::String((*c).to_string()), Vec::new()))
                    .collect();
                let mut input = "sig1=".to_string();
                meshguard_authn::sf::write_inner(&covered, &params, &mut input);
                let mut sig = "sig1=".to_string();
                meshguard_authn::sf::write_bare(&Bare::Bytes(mac.sign(b"").to_vec()), &mut sig);
                (input, sig)
            }
        };
        h.push(("signature-input".into(), input));
        h.push(("signature".into(), signature));
        let set = |h: &mut Vec<(String, String)>, k: &str, v: String| {
            for (name, value) in h.iter_mut() {
                if name == k {
                    *value = v.clone();
                }
            }
        };
        match s.tamper {
            Tamper::None => {}
            Tamper::Method => set(&mut h, ":method", "PUT".into()),
            Tamper::Authority => set(&mut h, ":authority", "other.example.com".into()),
            Tamper::Path => set(
                &mut h,
                ":path",
                self.path.replacen("/signed", "/signed/x", 1),
            ),
            Tamper::Query => set(&mut h, ":path", format!("{}&admin=1", self.path)),
            Tamper::Header => set(&mut h, "content-type", "text/plain".into()),
            Tamper::Body => body = b"{\"hello\": \"mallory\"}".to_vec(),
            Tamper::MalformedInput => set(&mut h, "signature-input", "sig1=(\"@method\"".into()),
            Tamper::MalformedSignature => set(&mut h, "signature", "sig1=\"not bytes\"".into()),
            Tamper::Unsigned => h.retain(|(k, _)| !k.starts_with("signature")),
        }
        (h, body)
    }
}

/// Problems with what a runtime observed: the upstream's request headers
/// (if it got there), else the local reply (status, WWW-Authenticate,
/// body, every header).
pub fn check(
    case: &Case,
    upstream: Option<&[(String, String)]>,
    reply: Option<Reply>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match (case.expect, upstream, reply) {
        (Expect::Upstream(want), Some(up), _) => {
            for (name, w) in want {
                let got: Vec<&String> = up
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
                    .collect();
                match w {
                    Want::Is(v) if got.len() != 1 || got[0] != v => {
                        problems.push(format!("{name}: want {v:?}, got {got:?}"))
                    }
                    Want::Absent if !got.is_empty() => {
                        problems.push(format!("{name}: want absent, got {got:?}"))
                    }
                    _ => {}
                }
            }
        }
        (Expect::Upstream(_), None, r) => problems.push(format!("denied: {r:?}")),
        (Expect::Reply(status, www), _, Some((got, got_www, body, headers))) => {
            if got != status {
                problems.push(format!("status: want {status}, got {got} ({body})"));
            }
            match (www, got_www) {
                (None, Some(g)) => problems.push(format!("www-authenticate: want none, got {g}")),
                (Some(w), None) => problems.push(format!("www-authenticate: want {w:?}, got none")),
                (Some(w), Some(g)) if !g.contains(w) => {
                    problems.push(format!("www-authenticate: want {w:?} in {g:?}"))
                }
                _ => {}
            }
            // The auth service's other headers never reach the client.
            if headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("x-internal-debug"))
            {
                problems.push("a denial leaked the auth service's headers".into());
            }
        }
        (Expect::Reply(..), _, None) => problems.push("reached the upstream".into()),
    }
    problems
}

const fn get(
    name: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    expect: Expect,
) -> Case {
    Case {
        name,
        method: "GET",
        path,
        headers,
        body: None,
        sig: None,
        expect,
    }
}

const fn signed(name: &'static str, s: Sig, body: bool, expect: Expect) -> Case {
    Case {
        name,
        method: "POST",
        path: "/signed/orders?id=7",
        headers: &[("content-type", "application/json")],
        body: if body { Some(BODY) } else { None },
        sig: Some(s),
        expect,
    }
}

const ALICE: Expect = Expect::Upstream(&[
    ("x-user-id", Want::Is("alice")),
    ("x-tenant", Want::Is("acme")),
]);
const PARTNER: Expect = Expect::Upstream(&[("x-user-id", Want::Is("partner-a"))]);
const UNAVAILABLE: Expect = Expect::Reply(503, None);
const BAD_SIG: Expect = Expect::Reply(401, Some("Signature"));

pub const CASES: &[Case] = &[
    get(
        "public path, forged identity stripped",
        "/health",
        &[("x-user-id", "admin")],
        Expect::Upstream(&[("x-user-id", Want::Absent)]),
    ),
    get(
        "jwt rule without a token",
        "/api/items",
        &[],
        Expect::Reply(401, Some("Bearer")),
    ),
    get("no rule matches", "/other", &[], Expect::Reply(403, None)),
    // External auth.
    get(
        "ext: allowed, identity headers copied",
        "/legacy/orders",
        &[("authorization", "Bearer alice")],
        ALICE,
    ),
    get(
        "ext: forged identity headers are replaced",
        "/legacy/orders",
        &[
            ("authorization", "Bearer alice"),
            ("x-user-id", "mallory"),
            ("X-Tenant", "evil"),
        ],
        ALICE,
    ),
    get(
        "ext: credentials from a cookie",
        "/legacy/orders",
        &[("cookie", "theme=dark; session=bob")],
        Expect::Upstream(&[
            ("x-user-id", Want::Is("bob")),
            ("x-tenant", Want::Is("acme")),
        ]),
    ),
    get(
        "ext: allowed without identity, forged one stripped",
        "/legacy/orders",
        &[
            ("authorization", "Bearer anonymous"),
            ("x-user-id", "admin"),
        ],
        Expect::Upstream(&[("x-user-id", Want::Absent), ("x-tenant", Want::Absent)]),
    ),
    get(
        "ext: missing credentials, the service's 401",
        "/legacy/orders",
        &[("x-user-id", "admin")],
        Expect::Reply(401, Some("Bearer realm=\"demo\"")),
    ),
    get(
        "ext: the service's 403",
        "/legacy/orders",
        &[("authorization", "Bearer blocked")],
        Expect::Reply(403, None),
    ),
    get(
        "ext: service error fails closed",
        "/legacy/orders",
        &[("authorization", "Bearer boom")],
        UNAVAILABLE,
    ),
    get(
        "ext: service too slow fails closed",
        "/legacy/orders",
        &[("authorization", "Bearer slow")],
        UNAVAILABLE,
    ),
    get(
        "ext: service down fails closed",
        "/down/orders",
        &[("authorization", "Bearer alice")],
        UNAVAILABLE,
    ),
    // HMAC request signatures.
    signed(
        "hmac: signed request with body",
        sig(FULL, Tamper::None),
        true,
        PARTNER,
    ),
    signed(
        "hmac: signed request without body",
        sig(NO_BODY, Tamper::None),
        false,
        PARTNER,
    ),
    signed(
        "hmac: created 300 s ago",
        Sig {
            created: -300,
            ..sig(FULL, Tamper::None)
        },
        true,
        PARTNER,
    ),
    signed(
        "hmac: created 300 s ahead",
        Sig {
            created: 300,
            ..sig(FULL, Tamper::None)
        },
        true,
        PARTNER,
    ),
    signed(
        "hmac: created 301 s ago",
        Sig {
            created: -301,
            ..sig(FULL, Tamper::None)
        },
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: created 301 s ahead",
        Sig {
            created: 301,
            ..sig(FULL, Tamper::None)
        },
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: expires passed",
        Sig {
            expires: Some(-5),
            ..sig(FULL, Tamper::None)
        },
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: expires ahead",
        Sig {
            expires: Some(60),
            ..sig(FULL, Tamper::None)
        },
        true,
        PARTNER,
    ),
    signed(
        "hmac: method changed",
        sig(FULL, Tamper::Method),
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: authority changed",
        sig(FULL, Tamper::Authority),
        true,
        BAD_SIG,
    ),
    signed("hmac: path changed", sig(FULL, Tamper::Path), true, BAD_SIG),
    signed(
        "hmac: query changed",
        sig(FULL, Tamper::Query),
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: covered header changed",
        sig(
            &[
                "@method",
                "@authority",
                "@path",
                "@query",
                "content-digest",
                "content-type",
            ],
            Tamper::Header,
        ),
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: body does not match the digest",
        sig(FULL, Tamper::Body),
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: unknown keyid",
        Sig {
            keyid: "partner-z",
            ..sig(FULL, Tamper::None)
        },
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: another algorithm",
        Sig {
            alg: Some("hmac-sha512"),
            ..sig(FULL, Tamper::None)
        },
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: malformed Signature-Input",
        sig(FULL, Tamper::MalformedInput),
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: malformed Signature",
        sig(FULL, Tamper::MalformedSignature),
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: a component listed twice",
        sig(
            &[
                "@method",
                "@authority",
                "@path",
                "@query",
                "@method",
                "content-digest",
            ],
            Tamper::None,
        ),
        true,
        BAD_SIG,
    ),
    signed("hmac: unsigned", sig(FULL, Tamper::Unsigned), true, BAD_SIG),
    signed(
        "hmac: required @query not covered",
        sig(
            &["@method", "@authority", "@path", "content-digest"],
            Tamper::None,
        ),
        true,
        BAD_SIG,
    ),
    signed(
        "hmac: body without content-digest covered",
        sig(NO_BODY, Tamper::None),
        true,
        BAD_SIG,
    ),
    Case {
        name: "hmac: forged identity replaced by the key's",
        method: "GET",
        path: "/signed/orders?id=7",
        headers: &[("x-user-id", "admin")],
        body: None,
        sig: Some(sig(NO_BODY, Tamper::None)),
        expect: PARTNER,
    },
    Case {
        name: "hmac: body over the limit is 413",
        method: "POST",
        path: "/signed/upload?id=7",
        headers: &[],
        body: Some(BIG_BODY),
        sig: Some(sig(FULL, Tamper::None)),
        expect: Expect::Reply(413, None),
    },
];

/// 2 KB, over the 1 KB limit.
pub const BIG_BODY: &str = concat!(
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
);
