//! RFC 9421 HTTP Message Signatures with `hmac-sha256`, and RFC 9530
//! `Content-Digest`: the signature base is rebuilt from the request as the
//! proxy holds it, and the MAC is compared in constant time. Plain Rust
//! over [`HeaderSource`]: the stage, the CLI (`meshguard sign`) and tests
//! share it.

use meshguard_authn_crypto::{sha256, sha512, HmacSha256};
use meshguard_common::headers::HeaderSource;

use crate::sf::{self, Bare, Member, Params};

/// Why a signed request is refused (401 unless noted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    /// No `Signature-Input` / `Signature` (or none for the configured label).
    Missing,
    /// A field does not parse, a component is listed twice or has an
    /// unsupported parameter, `created` is missing, ...
    Malformed,
    /// `alg` is not `hmac-sha256`.
    Algorithm,
    UnknownKey,
    /// `created` outside the window (either side).
    Created,
    /// `expires` has passed.
    Expired,
    /// A component the rule requires is not covered.
    NotCovered,
    /// A covered header is absent from the request.
    ComponentMissing,
    BadSignature,
    /// The body does not match `Content-Digest`.
    Digest,
    /// A `nonce` is required and absent, or seen before.
    Replay,
    /// The body is larger than the configured maximum (413).
    TooLarge,
}

impl SigError {
    pub const ALL: [SigError; 12] = [
        SigError::Missing,
        SigError::Malformed,
        SigError::Algorithm,
        SigError::UnknownKey,
        SigError::Created,
        SigError::Expired,
        SigError::NotCovered,
        SigError::ComponentMissing,
        SigError::BadSignature,
        SigError::Digest,
        SigError::Replay,
        SigError::TooLarge,
    ];

    /// Metric suffix.
    pub fn reason(self) -> &'static str {
        match self {
            SigError::Missing => "sig_missing",
            SigError::Malformed => "sig_malformed",
            SigError::Algorithm => "sig_algorithm",
            SigError::UnknownKey => "sig_unknown_key",
            SigError::Created => "sig_created",
            SigError::Expired => "sig_expired",
            SigError::NotCovered => "sig_not_covered",
            SigError::ComponentMissing => "sig_component_missing",
            SigError::BadSignature => "sig_bad_signature",
            SigError::Digest => "sig_digest",
            SigError::Replay => "sig_replay",
            SigError::TooLarge => "sig_body_too_large",
        }
    }

    /// `error_description` of the 401 (never echoes request data).
    pub fn description(self) -> &'static str {
        match self {
            SigError::Missing => "a request signature is required",
            SigError::Malformed => "the signature fields are malformed",
            SigError::Algorithm => "the signature algorithm is not accepted",
            SigError::UnknownKey => "the signature key is unknown",
            SigError::Created => "the signature creation time is outside the window",
            SigError::Expired => "the signature has expired",
            SigError::NotCovered => "the signature does not cover a required component",
            SigError::ComponentMissing => "a covered component is missing from the request",
            SigError::BadSignature => "the signature does not verify",
            SigError::Digest => "the body does not match Content-Digest",
            SigError::Replay => "the signature nonce is missing or was used before",
            SigError::TooLarge => "the request body is too large",
        }
    }
}

/// One key a client signs with.
#[derive(Debug, Clone)]
pub struct SigKey {
    pub id: String,
    pub mac: HmacSha256,
    /// Who the key belongs to: the identity the request gets.
    pub subject: std::rc::Rc<str>,
}

/// What a provider checks.
#[derive(Debug, Clone)]
pub struct Policy {
    pub keys: Vec<SigKey>,
    /// Only this signature label, when set.
    pub label: Option<String>,
    /// Components every request must cover (lowercase).
    pub required: Vec<String>,
    /// Requests with a body must cover `content-digest`.
    pub digest_with_body: bool,
    pub window_secs: i64,
    pub require_nonce: bool,
}

/// A signature that verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub key: usize,
    /// The `Content-Digest` the body must match, when it is covered.
    pub digest: Option<Digest>,
    pub nonce: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Digest {
    Sha256([u8; 32]),
    Sha512([u8; 64]),
}

impl Digest {
    pub fn matches(&self, body: &[u8]) -> bool {
        match self {
            Digest::Sha256(d) => subtle_eq(&sha256(body), d),
            Digest::Sha512(d) => subtle_eq(&sha512(body), d),
        }
    }
}

/// Constant-time enough for a digest (the digest is not secret, but there
/// is no reason to leak where it differs).
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// All values of a header, trimmed, joined with `, ` (RFC 9421 §2.1).
fn field<H: HeaderSource + ?Sized>(h: &H, name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for (k, v) in h.pairs() {
        if !k.eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
        let v = v.trim_ascii();
        match &mut out {
            None => out = Some(v.to_vec()),
            Some(o) => {
                o.extend_from_slice(b", ");
                o.extend_from_slice(v);
            }
        }
    }
    out
}

/// A derived component's value (RFC 9421 §2.2), or `None` when the request
/// has no such thing.
fn derived<H: HeaderSource + ?Sized>(h: &H, name: &str) -> Option<Vec<u8>> {
    let path = h.first(":path").unwrap_or_default();
    let (p, q) = match path.iter().position(|b| *b == b'?') {
        Some(i) => (path.get(..i)?, path.get(i + 1..)?),
        None => (path, &b""[..]),
    };
    let scheme = h.first(":scheme").unwrap_or(b"http").to_ascii_lowercase();
    let authority = || -> Vec<u8> {
        let mut a = h
            .first(":authority")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let default = if scheme == b"https" {
            &b":443"[..]
        } else {
            b":80"
        };
        if a.ends_with(default) {
            a.truncate(a.len() - default.len());
        }
        a
    };
    Some(match name {
        "@method" => h.first(":method")?.to_vec(),
        "@authority" => authority(),
        "@scheme" => scheme.clone(),
        "@path" => {
            if p.is_empty() {
                b"/".to_vec()
            } else {
                p.to_vec()
            }
        }
        "@query" => {
            let mut v = b"?".to_vec();
            v.extend_from_slice(q);
            v
        }
        "@request-target" => path.to_vec(),
        "@target-uri" => {
            // The target URI as sent (RFC 9421 §2.2.2): the authority
            // unnormalized.
            let mut v = scheme.clone();
            v.extend_from_slice(b"://");
            v.extend_from_slice(h.first(":authority").unwrap_or_default());
            v.extend_from_slice(if path.is_empty() { b"/" } else { path });
            v
        }
        _ => return None,
    })
}

/// Whether the request has a body to digest.
pub fn has_body<H: HeaderSource + ?Sized>(h: &H, end_of_stream: bool) -> bool {
    if !end_of_stream {
        return true;
    }
    h.first("content-length")
        .is_some_and(|v| v.trim_ascii() != b"0")
}

/// The signature base (RFC 9421 §2.5) for `covered` with `params`, or the
/// error for a component the request lacks or this verifier does not
/// support.
pub fn signature_base<H: HeaderSource + ?Sized>(
    h: &H,
    covered: &[(Bare, Params)],
    params: &Params,
) -> Result<Vec<u8>, SigError> {
    let mut base = Vec::with_capacity(256);
    let mut seen: Vec<&str> = Vec::with_capacity(covered.len());
    for (item, p) in covered {
        let Bare::String(name) = item else {
            return Err(SigError::Malformed);
        };
        // Component parameters (`sf`, `key`, `bs`, `req`, `tr`, `name`)
        // are not supported: refused, never ignored.
        if !p.is_empty()
            || name.is_empty()
            || name.bytes().any(|b| b.is_ascii_uppercase())
            || name == "@signature-params"
            || name == "@status"
            || name == "@query-param"
        {
            return Err(SigError::Malformed);
        }
        if seen.contains(&name.as_str()) {
            return Err(SigError::Malformed);
        }
        seen.push(name);
        let value = if name.starts_with('@') {
            derived(h, name).ok_or(SigError::Malformed)?
        } else {
            field(h, name).ok_or(SigError::ComponentMissing)?
        };
        base.push(b'"');
        base.extend_from_slice(name.as_bytes());
        base.extend_from_slice(b"\": ");
        base.extend_from_slice(&value);
        base.push(b'\n');
    }
    base.extend_from_slice(b"\"@signature-params\": ");
    let mut s = String::new();
    sf::write_inner(covered, params, &mut s);
    base.extend_from_slice(s.as_bytes());
    Ok(base)
}

fn int_param(params: &Params, name: &str) -> Result<Option<i64>, SigError> {
    match params.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, Bare::Integer(n))) => Ok(Some(*n)),
        Some(_) => Err(SigError::Malformed),
    }
}

fn str_param<'p>(params: &'p Params, name: &str) -> Result<Option<&'p str>, SigError> {
    match params.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, Bare::String(s))) => Ok(Some(s)),
        Some(_) => Err(SigError::Malformed),
    }
}

/// Verifies the request's signature against `policy` at `now` (Unix
/// seconds). `with_body`: a body follows (see [`has_body`]).
pub fn verify<H: HeaderSource + ?Sized>(
    h: &H,
    policy: &Policy,
    now: i64,
    with_body: bool,
) -> Result<Verified, SigError> {
    let (Some(input), Some(sigs)) = (field(h, "signature-input"), field(h, "signature")) else {
        return Err(SigError::Missing);
    };
    let inputs = sf::dictionary(&input).map_err(|_| SigError::Malformed)?;
    let sigs = sf::dictionary(&sigs).map_err(|_| SigError::Malformed)?;
    // The signature to check: the configured label, or the first one whose
    // keyid is ours (a client or an earlier hop may add others).
    let mut first = None;
    let mut ours = None;
    for (label, m) in &inputs {
        if policy.label.as_ref().is_some_and(|l| l != label) {
            continue;
        }
        let Member::Inner(covered, params) = m else {
            return Err(SigError::Malformed);
        };
        let keyid = str_param(params, "keyid")?;
        if first.is_none() {
            first = Some(keyid.is_some());
        }
        if let Some(k) = keyid.and_then(|k| policy.keys.iter().position(|x| x.id == k)) {
            ours = Some((label, covered, params, k));
            break;
        }
    }
    let Some((label, covered, params, key)) = ours else {
        return Err(match first {
            None => SigError::Missing,
            Some(true) => SigError::UnknownKey,
            Some(false) => SigError::Malformed,
        });
    };
    if let Some(alg) = str_param(params, "alg")? {
        if alg != "hmac-sha256" {
            return Err(SigError::Algorithm);
        }
    }
    let created = int_param(params, "created")?.ok_or(SigError::Malformed)?;
    if (now - created).abs() > policy.window_secs {
        return Err(SigError::Created);
    }
    if let Some(exp) = int_param(params, "expires")? {
        if now > exp {
            return Err(SigError::Expired);
        }
    }
    let nonce = str_param(params, "nonce")?.map(str::to_string);
    if policy.require_nonce && nonce.as_deref().is_none_or(str::is_empty) {
        return Err(SigError::Replay);
    }
    let covers = |c: &str| {
        covered
            .iter()
            .any(|(b, _)| matches!(b, Bare::String(s) if s == c))
    };
    if policy.required.iter().any(|c| !covers(c))
        || (with_body && policy.digest_with_body && !covers("content-digest"))
    {
        return Err(SigError::NotCovered);
    }
    let base = signature_base(h, covered, params)?;
    let Some((_, sig)) = sigs.iter().find(|(l, _)| l == label) else {
        return Err(SigError::Missing);
    };
    let Member::Item(Bare::Bytes(sig), _) = sig else {
        return Err(SigError::Malformed);
    };
    let k = policy.keys.get(key).ok_or(SigError::UnknownKey)?;
    if !k.mac.verify(&base, sig) {
        return Err(SigError::BadSignature);
    }
    let digest = if covers("content-digest") {
        Some(content_digest(h)?)
    } else {
        None
    };
    Ok(Verified {
        key,
        digest,
        nonce,
        created,
    })
}

/// The strongest digest `Content-Digest` carries that this verifier knows
/// (sha-512, then sha-256).
pub fn content_digest<H: HeaderSource + ?Sized>(h: &H) -> Result<Digest, SigError> {
    let v = field(h, "content-digest").ok_or(SigError::ComponentMissing)?;
    let d = sf::dictionary(&v).map_err(|_| SigError::Malformed)?;
    let get = |alg: &str| {
        d.iter().find_map(|(k, m)| match m {
            Member::Item(Bare::Bytes(b), _) if k == alg => Some(b.clone()),
            _ => None,
        })
    };
    if let Some(b) = get("sha-512") {
        return <[u8; 64]>::try_from(b.as_slice())
            .map(Digest::Sha512)
            .map_err(|_| SigError::Malformed);
    }
    if let Some(b) = get("sha-256") {
        return <[u8; 32]>::try_from(b.as_slice())
            .map(Digest::Sha256)
            .map_err(|_| SigError::Malformed);
    }
    Err(SigError::Digest)
}

/// Signs a request (for `meshguard sign` and tests): returns the
/// `Signature-Input` and `Signature` values for `label`.
pub fn sign<H: HeaderSource + ?Sized>(
    h: &H,
    mac: &HmacSha256,
    label: &str,
    components: &[&str],
    params: &Params,
) -> Result<(String, String), SigError> {
    let covered: Vec<(Bare, Params)> = components
        .iter()
        .map(|c| (Bare::String((*c).to_string()), Vec::new()))
        .collect();
    let base = signature_base(h, &covered, params)?;
    let tag = mac.sign(&base);
    let mut input = format!("{label}=");
    sf::write_inner(&covered, params, &mut input);
    let mut sig = format!("{label}=");
    sf::write_bare(&Bare::Bytes(tag.to_vec()), &mut sig);
    Ok((input, sig))
}

/// `Content-Digest` for a body: `sha-256=:…:`.
pub fn digest_header(body: &[u8]) -> String {
    let mut s = String::from("sha-256=");
    sf::write_bare(&Bare::Bytes(sha256(body).to_vec()), &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = [
            (":method", "POST"),
            (":authority", "Example.com:80"),
            (":path", "/foo?param=Value&Pet=dog"),
            (":scheme", "http"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        h.push(("content-type".into(), "application/json".into()));
        h
    }

    #[test]
    fn derived_components_follow_rfc9421() {
        let h = req(&[]);
        assert_eq!(derived(&h, "@method").unwrap(), b"POST");
        assert_eq!(derived(&h, "@authority").unwrap(), b"example.com");
        assert_eq!(derived(&h, "@path").unwrap(), b"/foo");
        assert_eq!(derived(&h, "@query").unwrap(), b"?param=Value&Pet=dog");
        // @authority is normalized (RFC 9421 §2.2.3); @target-uri is the
        // URI as sent.
        assert_eq!(
            derived(&h, "@target-uri").unwrap(),
            b"http://Example.com:80/foo?param=Value&Pet=dog"
        );
        let mut h2 = h.clone();
        h2[2].1 = "/".into();
        assert_eq!(derived(&h2, "@query").unwrap(), b"?");
    }

    /// RFC 9421 Appendix B.2.5: the HMAC example (test-shared-secret).
    #[test]
    fn rfc9421_b25_hmac_example_verifies() {
        use base64::Engine;
        let secret = base64::engine::general_purpose::STANDARD
            .decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==")
            .unwrap();
        let h: Vec<(String, String)> = [
            (":method", "POST"),
            (":authority", "example.com"),
            (":path", "/foo?param=Value&Pet=dog"),
            (":scheme", "https"),
            ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("content-type", "application/json"),
            (
                "content-digest",
                "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
            ),
            ("content-length", "18"),
            (
                "signature-input",
                "sig-b25=(\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\"",
            ),
            (
                "signature",
                "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let policy = Policy {
            keys: vec![SigKey {
                id: "test-shared-secret".into(),
                mac: HmacSha256::new(&secret).unwrap(),
                subject: "partner".into(),
            }],
            label: None,
            required: vec![],
            digest_with_body: false,
            window_secs: 300,
            require_nonce: false,
        };
        let v = verify(&h, &policy, 1618884473 + 10, false).unwrap();
        assert_eq!(v.key, 0);
        assert_eq!(
            verify(&h, &policy, 1618884473 + 301, false),
            Err(SigError::Created)
        );
        let mut tampered = h.clone();
        tampered[1].1 = "example.org".into();
        assert_eq!(
            verify(&tampered, &policy, 1618884473, false),
            Err(SigError::BadSignature)
        );
    }

    /// The pyauth-signed vector in PROTOCOLS.md §A (key: test-shared-secret).
    #[test]
    fn pyauth_vector_verifies_and_tampering_fails() {
        use base64::Engine;
        let secret = base64::engine::general_purpose::STANDARD
            .decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==")
            .unwrap();
        let h: Vec<(String, String)> = [
            (":method", "POST"),
            (":authority", "example.com"),
            (":path", "/foo?a=1"),
            (":scheme", "https"),
            ("content-digest", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
            (
                "signature-input",
                "sig1=(\"@method\" \"@authority\" \"@path\" \"@query\" \"content-digest\");created=1618884473;keyid=\"k1\";alg=\"hmac-sha256\"",
            ),
            ("signature", "sig1=:teXutNxCnKZNQ7vi+uWO0puvo6WjoUOH65XIK3ZEWJU=:"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let policy = Policy {
            keys: vec![SigKey {
                id: "k1".into(),
                mac: HmacSha256::new(&secret).unwrap(),
                subject: "k1".into(),
            }],
            label: None,
            required: ["@method", "@authority", "@path", "@query"]
                .map(String::from)
                .to_vec(),
            digest_with_body: true,
            window_secs: 300,
            require_nonce: false,
        };
        let v = verify(&h, &policy, 1618884473, true).unwrap();
        assert!(v.digest.unwrap().matches(b"{\"hello\": \"world\"}"));
        for (i, bad) in [
            (0, "PUT"),
            (1, "example.org"),
            (2, "/fo?a=1"),
            (2, "/foo?a=2"),
        ] {
            let mut t = h.clone();
            t[i].1 = bad.into();
            assert_eq!(
                verify(&t, &policy, 1618884473, true),
                Err(SigError::BadSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn signs_what_it_verifies() {
        let mac = HmacSha256::new(b"secret").unwrap();
        let mut h = req(&[]);
        h.push(("content-digest".into(), digest_header(b"{\"a\":1}")));
        let params = vec![
            ("created".into(), Bare::Integer(1000)),
            ("keyid".into(), Bare::String("k1".into())),
            ("alg".into(), Bare::String("hmac-sha256".into())),
        ];
        let comps = ["@method", "@authority", "@path", "@query", "content-digest"];
        let (si, s) = sign(&h, &mac, "sig1", &comps, &params).unwrap();
        h.push(("signature-input".into(), si));
        h.push(("signature".into(), s));
        let policy = Policy {
            keys: vec![SigKey {
                id: "k1".into(),
                mac,
                subject: "k1".into(),
            }],
            label: None,
            required: ["@method", "@authority", "@path", "@query"]
                .map(String::from)
                .to_vec(),
            digest_with_body: true,
            window_secs: 300,
            require_nonce: false,
        };
        let v = verify(&h, &policy, 1000, true).unwrap();
        assert!(v.digest.as_ref().unwrap().matches(b"{\"a\":1}"));
        assert!(!v.digest.as_ref().unwrap().matches(b"{\"a\":2}"));
    }
}
