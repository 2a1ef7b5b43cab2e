//! One table of authn cases, run natively (native_cases.rs), against the
//! compiled `dist/authn.wasm` in wasm-test-harness (harness_cases.rs) and
//! through real Envoy (tests/tests/authn.rs). Tokens are minted per run
//! with `jsonwebtoken` (an independent implementation) relative to the
//! runtime's clock, from the checked-in demo keys.

#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const RSA_PEM: &str = include_str!("../../../../deploy/local/demo-keys/rsa.pem");
pub const EC_PEM: &str = include_str!("../../../../deploy/local/demo-keys/ec.pem");
pub const NEXT_PEM: &str = include_str!("../../../../deploy/local/demo-keys/rsa-next.pem");
pub const JWKS: &str = include_str!("../../../../deploy/local/demo-keys/jwks.json");
pub const ISSUER: &str = "https://demo.meshguard.local";
pub const HMAC_SECRET: &[u8] = b"an-internal-service-secret-of-32+bytes";

pub fn config() -> String {
    let oct = URL_SAFE_NO_PAD.encode(HMAC_SECRET);
    json!({
        "providers": [
            {
                "name": "demo",
                "issuer": ISSUER,
                "audiences": ["shop"],
                "algorithms": ["RS256", "ES256"],
                "jwks": {"inline": serde_json::from_str::<Value>(JWKS).unwrap()},
                "sources": ["bearer", {"header": {"name": "x-api-token"}},
                            {"query": "access_token"}, {"cookie": "mg_token"}],
                "claims_to_headers": [
                    {"claim": "realm_access.roles", "header": "x-roles"},
                    {"claim": "email", "header": "x-email"}
                ]
            },
            {
                "name": "internal",
                "issuer": "svc",
                "algorithms": ["HS256"],
                "jwks": {"inline": {"keys": [{"kty": "oct", "kid": "svc-1", "k": oct}]}},
                "sources": [{"header": {"name": "x-service-token", "prefix": "Token "}}],
                "identity": {"header": "x-service", "claim": "sub"}
            }
        ],
        "rules": [
            {"match": {"path": {"prefix": "/public"}}, "requires": "public"},
            {"match": {"path": {"prefix": "/orders"}, "methods": ["POST"]},
             "requires": {"any": ["demo"]},
             "claims": [{"claim": "scope", "contains": "orders:write"}]},
            {"match": {"path": {"regex": "/admin(/.*)?"}}, "requires": {"any": ["demo"]},
             "claims": [{"claim": "realm_access.roles", "contains": "admin"}]},
            {"match": {"path": {"prefix": "/optional"}}, "requires": {"optional": ["demo"]}},
            {"match": {"path": {"prefix": "/internal"}}, "requires": {"any": ["internal"]}},
            {"match": {"path": {"prefix": "/forward"}}, "requires": {"any": ["demo"]},
             "forward_token": true},
            {"requires": {"any": ["demo"]}}
        ]
    })
    .to_string()
}

/// The table's config with the demo provider's keys fetched from cluster
/// `idp` (`/jwks.json`) instead of inline.
pub fn remote_config() -> String {
    let mut v: Value = serde_json::from_str(&config()).unwrap();
    v["providers"][0]["jwks"] = json!({
        "remote": {"cluster": "idp", "path": "/jwks.json", "timeout_ms": 500},
        "cache_seconds": 60, "min_refetch_seconds": 30
    });
    v.to_string()
}

/// `GET /api` with `Authorization: Bearer <t minted at now>`.
pub fn bearer_request(t: Tok, now: u64) -> Vec<(String, String)> {
    Case {
        name: "bearer",
        method: "GET",
        path: "/api",
        token: Some(Put::Bearer(t)),
        extra: &[],
        expect: Expect::Reply(0, None),
    }
    .request(now as i64)
}

/// Which token a case sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    Rs256,
    Es256,
    Rs256Scoped,
    Rs256Admin,
    Hs256Internal,
    AlgNone(&'static str),
    HsWithRsaPublicKey,
    UnknownKid,
    TamperedHeader,
    TamperedPayload,
    TamperedSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingExp,
    Oversize,
    BadBase64,
    BadJson,
    DuplicateMember,
    Es256Der,
    Crit,
    SignedByOtherKey,
    OtherUser,
    /// Validly signed, but `sub` holds CR/LF: it cannot be a header value.
    CrlfSubject,
    /// Validly signed (RS256, the demo key) under this raw JOSE header.
    SignedHeader(&'static str),
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn claims(now: i64, sub: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": "shop", "sub": sub, "email": format!("{sub}@example.com"),
        "iat": now - 10, "exp": now + 3600,
        "realm_access": {"roles": ["user"]}, "scope": "orders:read"
    })
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap()
}

fn header(alg: Algorithm, kid: &str) -> Header {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    h
}

fn sign_raw(header: &str, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

pub fn mint(t: Tok, now: i64) -> String {
    let rs =
        |c: &Value| jsonwebtoken::encode(&header(Algorithm::RS256, "demo-rsa"), c, &rsa()).unwrap();
    let base = claims(now, "alice");
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    match t {
        Tok::Rs256 => rs(&base),
        Tok::OtherUser => rs(&claims(now, "bob")),
        Tok::CrlfSubject => rs(&claims(now, "bob\r\nx-admin: 1")),
        Tok::Es256 => jsonwebtoken::encode(
            &header(Algorithm::ES256, "demo-ec"),
            &base,
            &EncodingKey::from_ec_pem(EC_PEM.as_bytes()).unwrap(),
        )
        .unwrap(),
        Tok::Rs256Scoped => rs(&with("scope", json!("orders:read orders:write"))),
        Tok::Rs256Admin => rs(&with("realm_access", json!({"roles": ["user", "admin"]}))),
        Tok::Hs256Internal => jsonwebtoken::encode(
            &header(Algorithm::HS256, "svc-1"),
            &json!({"iss": "svc", "sub": "billing", "exp": now + 600}),
            &EncodingKey::from_secret(HMAC_SECRET),
        )
        .unwrap(),
        Tok::AlgNone(alg) => format!(
            "{}.{}.{}",
            b64(format!(r#"{{"alg":"{alg}","kid":"demo-rsa"}}"#).as_bytes()),
            b64(base.to_string().as_bytes()),
            b64(b"x")
        ),
        Tok::HsWithRsaPublicKey => {
            // The classic confusion: the RSA public key used as HMAC secret.
            let public = serde_json::from_str::<Value>(JWKS).unwrap()["keys"][0].to_string();
            jsonwebtoken::encode(
                &header(Algorithm::HS256, "demo-rsa"),
                &base,
                &EncodingKey::from_secret(public.as_bytes()),
            )
            .unwrap()
        }
        Tok::UnknownKid => {
            jsonwebtoken::encode(&header(Algorithm::RS256, "nope"), &base, &rsa()).unwrap()
        }
        Tok::TamperedHeader => {
            let t = rs(&base);
            let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
            parts[0] = b64(br#"{"alg":"RS256","kid":"demo-rsa","typ":"JWT","x":1}"#);
            parts.join(".")
        }
        Tok::TamperedPayload => {
            let t = rs(&base);
            let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
            parts[1] = b64(claims(now, "admin").to_string().as_bytes());
            parts.join(".")
        }
        Tok::TamperedSignature => {
            let t = rs(&base);
            let mut sig = URL_SAFE_NO_PAD
                .decode(t.rsplit('.').next().unwrap())
                .unwrap();
            sig[10] ^= 1;
            let keep = t.rsplit_once('.').unwrap().0;
            format!("{keep}.{}", b64(&sig))
        }
        Tok::Expired => rs(&with("exp", json!(now - 3600))),
        Tok::NotYetValid => rs(&with("nbf", json!(now + 3600))),
        Tok::WrongIssuer => rs(&with("iss", json!("https://evil.example"))),
        Tok::WrongAudience => rs(&with("aud", json!(["other", "x"]))),
        Tok::MissingExp => {
            let mut c = base.clone();
            c.as_object_mut().unwrap().remove("exp");
            rs(&c)
        }
        Tok::Oversize => rs(&with("pad", json!("x".repeat(9000)))),
        Tok::BadBase64 => "eyJ!!!.e30.c2ln".into(),
        Tok::BadJson => format!("{}.{}.{}", b64(b"{not json"), b64(b"{}"), b64(b"sig")),
        Tok::DuplicateMember => {
            let payload = format!(
                r#"{{"iss":"{ISSUER}","aud":"shop","sub":"alice","sub":"admin","exp":{}}}"#,
                now + 3600
            );
            sign_raw(
                r#"{"alg":"RS256","kid":"demo-rsa"}"#,
                &payload,
                &rsa(),
                Algorithm::RS256,
            )
        }
        Tok::Es256Der => {
            let t = jsonwebtoken::encode(
                &header(Algorithm::ES256, "demo-ec"),
                &base,
                &EncodingKey::from_ec_pem(EC_PEM.as_bytes()).unwrap(),
            )
            .unwrap();
            let (input, sig) = t.rsplit_once('.').unwrap();
            let raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
            format!("{input}.{}", b64(&der(&raw[..32], &raw[32..])))
        }
        Tok::Crit => sign_raw(
            r#"{"alg":"RS256","kid":"demo-rsa","crit":["exp"],"exp":1}"#,
            &base.to_string(),
            &rsa(),
            Algorithm::RS256,
        ),
        Tok::SignedHeader(h) => sign_raw(h, &base.to_string(), &rsa(), Algorithm::RS256),
        Tok::SignedByOtherKey => jsonwebtoken::encode(
            &header(Algorithm::RS256, "demo-rsa"),
            &base,
            &EncodingKey::from_rsa_pem(NEXT_PEM.as_bytes()).unwrap(),
        )
        .unwrap(),
    }
}

fn der_int(x: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    let mut out = vec![0x02, v.len() as u8];
    out.extend(v);
    out
}

fn der(r: &[u8], s: &[u8]) -> Vec<u8> {
    let (r, s) = (der_int(r), der_int(s));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Is(&'static str),
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Reaches the upstream with these headers.
    Upstream(&'static [(&'static str, Want)]),
    /// Answered locally: status, `WWW-Authenticate` must contain this
    /// (`None`: absent).
    Reply(u16, Option<&'static str>),
    /// Never reaches the upstream: answered locally with a 3xx/4xx. The
    /// filter alone answers 400 for a path not in normal form; an Envoy
    /// that normalizes paths (as `make run`'s does) answers for the
    /// normalized path first (401) or redirects (307).
    Refused,
}

/// Where the token goes in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Bearer(Tok),
    BearerScheme(&'static str, Tok),
    Header(&'static str, &'static str, Tok),
    Query(Tok),
    Cookie(Tok),
    Two(Tok, Tok),
}

pub struct Case {
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub token: Option<Put>,
    pub extra: &'static [(&'static str, &'static str)],
    pub expect: Expect,
}

impl meshguard_stage::testing::NamedCase for Case {
    fn name(&self) -> &str {
        self.name
    }
}

impl Case {
    /// The request as the client sends it, tokens minted at `now`.
    pub fn request(&self, now: i64) -> Vec<(String, String)> {
        let mut path = self.path.to_string();
        let mut h: Vec<(String, String)> = Vec::new();
        match self.token {
            None => {}
            Some(Put::Bearer(t)) => {
                h.push(("authorization".into(), format!("Bearer {}", mint(t, now))))
            }
            Some(Put::BearerScheme(s, t)) => {
                h.push(("authorization".into(), format!("{s} {}", mint(t, now))))
            }
            Some(Put::Header(n, pre, t)) => h.push((n.into(), format!("{pre}{}", mint(t, now)))),
            Some(Put::Query(t)) => path = format!("{path}?a=1&access_token={}&b=2", mint(t, now)),
            Some(Put::Cookie(t)) => h.push((
                "cookie".into(),
                format!("theme=dark; mg_token={}; x=y", mint(t, now)),
            )),
            Some(Put::Two(a, b)) => {
                h.push(("authorization".into(), format!("Bearer {}", mint(a, now))));
                h.push(("x-api-token".into(), mint(b, now)));
            }
        }
        let mut out = vec![
            (":method".to_string(), self.method.to_string()),
            (":path".to_string(), path),
            (":authority".to_string(), "shop.example.com".to_string()),
            (":scheme".to_string(), "http".to_string()),
        ];
        out.extend(h);
        out.extend(
            self.extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        out
    }
}

/// Problems with what a runtime observed: the upstream's request headers
/// (if it got there), else the local reply's status and WWW-Authenticate.
pub fn check(
    case: &Case,
    upstream: Option<&[(String, String)]>,
    reply: Option<(u16, Option<String>, String)>,
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
        (Expect::Reply(status, www), _, Some((got, got_www, body))) => {
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
            if body.contains("eyJ") || body.contains("BEGIN") {
                problems.push("the body echoes a token or key".into());
            }
        }
        (Expect::Reply(..), _, None) => problems.push("reached the upstream".into()),
        (Expect::Refused, Some(up), _) => problems.push(format!("reached the upstream: {up:?}")),
        (Expect::Refused, None, Some((got, _, body))) => {
            if !(300..500).contains(&got) {
                problems.push(format!("status: want 3xx/4xx, got {got} ({body})"));
            }
        }
        (Expect::Refused, None, None) => problems.push("no answer".into()),
    }
    problems
}

const ALICE: &[(&str, Want)] = &[
    ("x-user-id", Want::Is("alice")),
    ("x-roles", Want::Is("user")),
    ("x-email", Want::Is("alice@example.com")),
    ("authorization", Want::Absent),
];
const NOBODY: &[(&str, Want)] = &[
    ("x-user-id", Want::Absent),
    ("x-roles", Want::Absent),
    ("x-email", Want::Absent),
    ("x-service", Want::Absent),
];
const INVALID: Expect = Expect::Reply(401, Some("error=\"invalid_token\""));

const fn bad(name: &'static str, t: Tok) -> Case {
    Case {
        name,
        method: "GET",
        path: "/api/items",
        token: Some(Put::Bearer(t)),
        extra: &[],
        expect: INVALID,
    }
}

const fn ok(
    name: &'static str,
    path: &'static str,
    put: Put,
    want: &'static [(&'static str, Want)],
) -> Case {
    Case {
        name,
        method: "GET",
        path,
        token: Some(put),
        extra: &[],
        expect: Expect::Upstream(want),
    }
}

const fn path_case(name: &'static str, path: &'static str, token: Option<Put>) -> Case {
    Case {
        name,
        method: "GET",
        path,
        token,
        extra: &[],
        expect: Expect::Refused,
    }
}

pub const CASES: &[Case] = &[
    bad("a subject that cannot be a header value", Tok::CrlfSubject),
    // Paths the upstream may read as another path than the rule saw.
    path_case(
        "dot segment under a public prefix",
        "/public/../api/items",
        None,
    ),
    path_case(
        "encoded dot segment under a public prefix",
        "/public/%2e%2E/api/items",
        None,
    ),
    path_case(
        "encoded slash under a public prefix",
        "/public%2F..%2Fapi/items",
        None,
    ),
    path_case(
        "backslash under a public prefix",
        "/public\\..\\api/items",
        None,
    ),
    path_case(
        "path parameter dot segment under a public prefix",
        "/public/..;/api/items",
        None,
    ),
    path_case(
        "percent-encoded letter in a protected prefix",
        "/%61pi/items",
        None,
    ),
    path_case(
        "double slash before a protected prefix",
        "//api/items",
        None,
    ),
    ok(
        "a query may hold anything",
        "/public/x?next=//a/../b%2f",
        Put::Query(Tok::UnknownKid),
        NOBODY,
    ),
    ok(
        "valid RS256 bearer",
        "/api/items",
        Put::Bearer(Tok::Rs256),
        ALICE,
    ),
    ok(
        "valid ES256 bearer",
        "/api/items",
        Put::Bearer(Tok::Es256),
        ALICE,
    ),
    ok(
        "bearer scheme is case-insensitive",
        "/api/items",
        Put::BearerScheme("bEaReR", Tok::Rs256),
        ALICE,
    ),
    ok(
        "token from a named header",
        "/api/items",
        Put::Header("x-api-token", "", Tok::Rs256),
        &[
            ("x-user-id", Want::Is("alice")),
            ("x-api-token", Want::Absent),
        ],
    ),
    ok(
        "token from the query is removed from the path",
        "/api/items",
        Put::Query(Tok::Rs256),
        &[
            ("x-user-id", Want::Is("alice")),
            (":path", Want::Is("/api/items?a=1&b=2")),
        ],
    ),
    ok(
        "token from a cookie is removed from the cookie",
        "/api/items",
        Put::Cookie(Tok::Rs256),
        &[
            ("x-user-id", Want::Is("alice")),
            ("cookie", Want::Is("theme=dark; x=y")),
        ],
    ),
    ok(
        "the same token twice is fine",
        "/api/items",
        Put::Two(Tok::Rs256, Tok::Rs256),
        &[("x-user-id", Want::Is("alice"))],
    ),
    ok(
        "forward_token rule keeps the token",
        "/forward/x",
        Put::Bearer(Tok::Rs256),
        &[("x-user-id", Want::Is("alice"))],
    ),
    ok(
        "HS256 service token with prefix",
        "/internal/jobs",
        Put::Header("x-service-token", "Token ", Tok::Hs256Internal),
        &[
            ("x-service", Want::Is("billing")),
            ("x-user-id", Want::Absent),
            ("x-service-token", Want::Absent),
        ],
    ),
    ok(
        "required scope present",
        "/orders",
        Put::Bearer(Tok::Rs256Scoped),
        &[("x-user-id", Want::Is("alice"))],
    ),
    Case {
        name: "required scope missing is 403",
        method: "POST",
        path: "/orders",
        token: Some(Put::Bearer(Tok::Rs256)),
        extra: &[],
        expect: Expect::Reply(403, Some("error=\"insufficient_scope\"")),
    },
    Case {
        name: "required scope present on POST",
        method: "POST",
        path: "/orders",
        token: Some(Put::Bearer(Tok::Rs256Scoped)),
        extra: &[],
        expect: Expect::Upstream(&[("x-user-id", Want::Is("alice"))]),
    },
    ok(
        "admin role via regex rule",
        "/admin/users",
        Put::Bearer(Tok::Rs256Admin),
        &[("x-roles", Want::Is("user,admin"))],
    ),
    Case {
        name: "admin role missing is 403",
        method: "GET",
        path: "/admin",
        token: Some(Put::Bearer(Tok::Rs256)),
        extra: &[],
        expect: Expect::Reply(403, Some("insufficient_scope")),
    },
    Case {
        name: "no token is 401 without error code",
        method: "GET",
        path: "/api/items",
        token: None,
        extra: &[],
        expect: Expect::Reply(401, Some("Bearer realm=\"meshguard\"")),
    },
    Case {
        name: "optional rule without token passes anonymous",
        method: "GET",
        path: "/optional/x",
        token: None,
        extra: &[("x-user-id", "mallory")],
        expect: Expect::Upstream(NOBODY),
    },
    Case {
        name: "optional rule with bad token is 401",
        method: "GET",
        path: "/optional/x",
        token: Some(Put::Bearer(Tok::Expired)),
        extra: &[],
        expect: INVALID,
    },
    Case {
        name: "CORS preflight passes without token",
        method: "OPTIONS",
        path: "/api/items",
        token: None,
        extra: &[
            ("origin", "https://shop.example.com"),
            ("access-control-request-method", "POST"),
        ],
        expect: Expect::Upstream(NOBODY),
    },
    Case {
        name: "forged identity headers in every case variant on a public path",
        method: "GET",
        path: "/public/x",
        token: None,
        extra: &[
            ("X-User-Id", "mallory"),
            ("x-user-id", "eve"),
            ("X-USER-ID", "root"),
            ("X-Roles", "admin"),
            ("x-email", "a@b"),
            ("X-Service", "billing"),
        ],
        expect: Expect::Upstream(NOBODY),
    },
    Case {
        name: "forged identity is replaced by the verified one",
        method: "GET",
        path: "/api/items",
        token: Some(Put::Bearer(Tok::Rs256)),
        extra: &[("X-User-Id", "mallory"), ("x-roles", "admin")],
        expect: Expect::Upstream(ALICE),
    },
    bad("alg none", Tok::AlgNone("none")),
    bad("alg None", Tok::AlgNone("None")),
    bad("alg NONE", Tok::AlgNone("NONE")),
    bad(
        "HS256 signed with the RSA public key",
        Tok::HsWithRsaPublicKey,
    ),
    bad("unknown kid", Tok::UnknownKid),
    bad("tampered header", Tok::TamperedHeader),
    bad("tampered payload", Tok::TamperedPayload),
    bad("tampered signature", Tok::TamperedSignature),
    bad(
        "signed by another key under a known kid",
        Tok::SignedByOtherKey,
    ),
    bad("expired", Tok::Expired),
    bad("nbf in the future", Tok::NotYetValid),
    bad("wrong iss", Tok::WrongIssuer),
    bad("wrong aud", Tok::WrongAudience),
    bad("missing exp when required", Tok::MissingExp),
    bad("token over the size limit", Tok::Oversize),
    bad("malformed base64", Tok::BadBase64),
    bad("malformed JSON", Tok::BadJson),
    bad("duplicate JSON members", Tok::DuplicateMember),
    bad("ES256 with a DER signature", Tok::Es256Der),
    bad("crit header parameter", Tok::Crit),
    bad(
        "crit header parameter set to null",
        Tok::SignedHeader(r#"{"alg":"RS256","kid":"demo-rsa","crit":null}"#),
    ),
    bad(
        "b64 header parameter set to null",
        Tok::SignedHeader(r#"{"alg":"RS256","kid":"demo-rsa","b64":null}"#),
    ),
    bad(
        "a JOSE header that is an array",
        Tok::SignedHeader(r#"["RS256","demo-rsa"]"#),
    ),
    bad(
        "a duplicate member in the JOSE header",
        Tok::SignedHeader(r#"{"alg":"RS256","kid":"demo-rsa","typ":"JWT","typ":"JOSE"}"#),
    ),
    bad(
        "an RSA algorithm naming the EC key",
        Tok::SignedHeader(r#"{"alg":"RS256","kid":"demo-ec"}"#),
    ),
    Case {
        name: "two different tokens",
        method: "GET",
        path: "/api/items",
        token: Some(Put::Two(Tok::Rs256, Tok::OtherUser)),
        extra: &[],
        expect: INVALID,
    },
    Case {
        name: "service token on a user route",
        method: "GET",
        path: "/api/items",
        token: Some(Put::Bearer(Tok::Hs256Internal)),
        extra: &[],
        expect: INVALID,
    },
];
