//! Compact JWS parsing, strict and cheap, in the order that rejects junk
//! before any signature work: size, shape, base64url, header JSON (no
//! duplicate members), `alg` on the allow-list, no `crit`. The payload is
//! only decoded once the signature has verified.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use meshguard_authn_crypto::Alg;

/// Why a token was refused. The `description` goes to the client in
/// `error_description`: fixed text, never token content or key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    TooLong,
    Malformed,
    /// `alg` missing, `none`, unknown, or not allowed for this provider.
    Algorithm,
    /// A `crit` header parameter (none is understood).
    Crit,
    /// No key with this `kid` (after a refetch, if one was allowed).
    UnknownKey,
    /// No `kid` and more than one candidate key.
    KidRequired,
    Signature,
    Expired,
    MissingExp,
    NotYetValid,
    IssuedInFuture,
    Issuer,
    Audience,
    /// Two different tokens in the sources one provider reads.
    Ambiguous,
}

impl Invalid {
    pub fn description(self) -> &'static str {
        match self {
            Invalid::TooLong => "the token is too long",
            Invalid::Malformed => "the token is malformed",
            Invalid::Algorithm => "the token's algorithm is not accepted",
            Invalid::Crit => "the token has critical header parameters that are not understood",
            Invalid::UnknownKey => "the token's signing key is unknown",
            Invalid::KidRequired => "the token has no key id",
            Invalid::Signature => "the token's signature is invalid",
            Invalid::Expired => "the token has expired",
            Invalid::MissingExp => "the token has no expiry",
            Invalid::NotYetValid => "the token is not valid yet",
            Invalid::IssuedInFuture => "the token was issued in the future",
            Invalid::Issuer => "the token's issuer is not accepted",
            Invalid::Audience => "the token's audience is not accepted",
            Invalid::Ambiguous => "more than one token was presented",
        }
    }

    /// Label in `meshguard_authn_denied.<reason>`.
    pub fn reason(self) -> &'static str {
        match self {
            Invalid::TooLong => "too_long",
            Invalid::Malformed => "malformed",
            Invalid::Algorithm => "algorithm",
            Invalid::Crit => "crit",
            Invalid::UnknownKey => "unknown_kid",
            Invalid::KidRequired => "kid_required",
            Invalid::Signature => "signature",
            Invalid::Expired => "expired",
            Invalid::MissingExp => "missing_exp",
            Invalid::NotYetValid => "not_yet_valid",
            Invalid::IssuedInFuture => "issued_in_future",
            Invalid::Issuer => "issuer",
            Invalid::Audience => "audience",
            Invalid::Ambiguous => "ambiguous",
        }
    }

    pub const ALL: [Invalid; 14] = [
        Invalid::TooLong,
        Invalid::Malformed,
        Invalid::Algorithm,
        Invalid::Crit,
        Invalid::UnknownKey,
        Invalid::KidRequired,
        Invalid::Signature,
        Invalid::Expired,
        Invalid::MissingExp,
        Invalid::NotYetValid,
        Invalid::IssuedInFuture,
        Invalid::Issuer,
        Invalid::Audience,
        Invalid::Ambiguous,
    ];
}

/// A token whose header passed every cheap check.
#[derive(Debug)]
pub struct Jws<'t> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `header.payload`, what the signature covers.
    pub signing_input: &'t [u8],
    pub payload_b64: &'t str,
    /// The signature segment, decoded only once a key was found.
    pub signature_b64: &'t str,
}

impl Jws<'_> {
    pub fn signature(&self) -> Result<Vec<u8>, Invalid> {
        URL_SAFE_NO_PAD
            .decode(self.signature_b64)
            .map_err(|_| Invalid::Malformed)
    }
}

/// The JOSE header members this filter reads, from any header the plain
/// scanner leaves to the strict parser: an object (an array is malformed,
/// though serde would read a struct from one), no member twice at any
/// depth, `crit` or `b64` present at all (even `null`) an extension.
struct JoseHeader {
    alg: Option<String>,
    kid: Option<String>,
    extension: bool,
}

impl JoseHeader {
    fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        let mut m = strict_object(bytes).ok_or(Invalid::Malformed)?;
        let alg = match m.remove("alg") {
            Some(Value::String(a)) => Some(a),
            _ => None,
        };
        let kid = match m.remove("kid") {
            None => None,
            Some(Value::String(k)) => Some(k),
            Some(_) => return Err(Invalid::Malformed),
        };
        // RFC 7515 §4.1.11: every listed extension must be understood;
        // this filter understands none. RFC 7797 unencoded payloads (`b64`
        // other than true) are not supported.
        let extension =
            m.contains_key("crit") || m.get("b64").is_some_and(|b| *b != Value::Bool(true));
        Ok(Self {
            alg,
            kid,
            extension,
        })
    }
}

/// Largest decoded JOSE header accepted (they are ~100 bytes).
const MAX_HEADER: usize = 2048;

/// `alg` and `kid` of a plain JOSE header: a JSON object whose members
/// are all strings without escapes or control characters, with no `crit`
/// or `b64` member and no member twice. For such a header the strict
/// parser (`JoseHeader::parse`) returns the same `alg` and `kid` and no
/// extension; for anything else this returns `None` and the strict parser
/// decides (tested against it in `plain_header_agrees_with_serde`).
#[derive(Debug, PartialEq, Eq)]
struct Plain<'a> {
    alg: Option<&'a str>,
    kid: Option<&'a str>,
}

fn plain_header(bytes: &[u8]) -> Option<Plain<'_>> {
    // serde_json reads UTF-8 only, and so does this.
    let text = std::str::from_utf8(bytes).ok()?;
    let b = text.as_bytes();
    let ws = |mut i: usize| {
        while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            i += 1;
        }
        i
    };
    // A string at `i` without escapes or control characters: its text and
    // the index after its closing quote.
    let string = |i: usize| -> Option<(&str, usize)> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let len = b
            .get(start..)?
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        let end = start + len;
        if b.get(end) != Some(&b'"') {
            return None;
        }
        Some((text.get(start..end)?, end + 1))
    };
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    let mut plain = Plain {
        alg: None,
        kid: None,
    };
    // Headers have a handful of members: a linear scan is cheapest.
    let mut names: Vec<&str> = Vec::new();
    if b.get(i) == Some(&b'}') {
        return (ws(i + 1) == b.len()).then_some(plain);
    }
    loop {
        let (name, next) = string(i)?;
        i = ws(next);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let (value, next) = string(ws(i + 1))?;
        i = ws(next);
        // A member twice (any member: the strict parser refuses them all).
        if names.contains(&name) {
            return None;
        }
        names.push(name);
        match name {
            "alg" => plain.alg = Some(value),
            "kid" => plain.kid = Some(value),
            "crit" | "b64" => return None,
            _ => {}
        }
        match b.get(i) {
            Some(b',') => i = ws(i + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    (ws(i + 1) == b.len()).then_some(plain)
}

/// Parses `token` up to (not including) signature verification.
/// `allowed` is the provider's algorithm list.
pub fn parse<'t>(token: &'t str, max_len: usize, allowed: &[Alg]) -> Result<Jws<'t>, Invalid> {
    if token.len() > max_len {
        return Err(Invalid::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() || h.len() > MAX_HEADER * 4 / 3 + 4 {
        return Err(Invalid::Malformed);
    }
    let decoded = URL_SAFE_NO_PAD.decode(h).map_err(|_| Invalid::Malformed)?;
    // Nearly every header is a flat object of plain strings: read those
    // with a scanner that gives exactly serde's answer for them (see
    // `plain_header`), and anything else with serde. Typed and borrowing:
    // serde's derive refuses a duplicated member it knows (a second `alg`,
    // `kid`, `crit`); members it does not know are never read. Objects
    // only: `[..]` or a string is malformed.
    let strict: JoseHeader;
    let (alg, kid, extension) = match plain_header(&decoded) {
        Some(p) => (p.alg, p.kid, false),
        None => {
            strict = JoseHeader::parse(&decoded)?;
            (
                strict.alg.as_deref(),
                strict.kid.as_deref(),
                strict.extension,
            )
        }
    };
    let alg = Alg::from_jose(alg.ok_or(Invalid::Algorithm)?).ok_or(Invalid::Algorithm)?;
    if !allowed.contains(&alg) {
        return Err(Invalid::Algorithm);
    }
    if extension {
        return Err(Invalid::Crit);
    }
    let kid = match kid {
        None => None,
        Some(k) if k.len() <= 256 => Some(k.to_owned()),
        Some(_) => return Err(Invalid::Malformed),
    };
    // `jku`, `x5u`, `jwk`, `x5c`: untrusted, ignored, never fetched.
    // Only the length now: the signature's characters are checked by its
    // strict base64 decoding, once a key was found (a per-byte scan here
    // was half of a junk token's cost).
    if s.len() > 1024 {
        return Err(Invalid::Malformed);
    }
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or(Invalid::Malformed)?
        .as_bytes();
    Ok(Jws {
        alg,
        kid,
        signing_input,
        payload_b64: p,
        signature_b64: s,
    })
}

/// Decodes and parses the payload of a verified token.
pub fn payload(jws: &Jws<'_>) -> Result<Map<String, Value>, Invalid> {
    let bytes = URL_SAFE_NO_PAD
        .decode(jws.payload_b64)
        .map_err(|_| Invalid::Malformed)?;
    strict_object(&bytes).ok_or(Invalid::Malformed)
}

/// A JSON object with no duplicate member anywhere (RFC 7515 §5.2 lets a
/// parser reject them, and two parsers that pick different duplicates are
/// a classic bypass).
pub fn strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Strict>(bytes).ok()?.0 {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(k, v).is_some() {
                return Err(de::Error::custom("duplicate member"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// The value at a dotted path (`realm_access.roles`).
pub fn claim<'v>(claims: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut segs = path.split('.');
    let mut v = claims.get(segs.next()?)?;
    for seg in segs {
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
}

/// A claim as a header value: strings as they are, arrays joined with
/// commas (string elements bare, others as JSON), other values as JSON.
pub fn claim_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// The words a `contains` requirement looks in: array elements (strings),
/// the space-separated words of a string (`scope`), or a scalar's text.
pub fn claim_items(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

/// Time checks and `iss`/`aud`. `now` and the claims in seconds since the
/// epoch. Returns `exp` (if any) for the cache.
pub struct TimeRules<'a> {
    pub now: i64,
    pub skew: i64,
    pub require_exp: bool,
    pub issuer: Option<&'a str>,
    pub audiences: &'a [String],
}

fn seconds(v: &Value) -> Result<i64, Invalid> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .ok_or(Invalid::Malformed),
        _ => Err(Invalid::Malformed),
    }
}

impl TimeRules<'_> {
    pub fn check(
        &self,
        claims: &Map<String, Value>,
    ) -> Result<(Option<i64>, Option<i64>), Invalid> {
        let exp = claims.get("exp").map(seconds).transpose()?;
        let nbf = claims.get("nbf").map(seconds).transpose()?;
        let iat = claims.get("iat").map(seconds).transpose()?;
        match exp {
            Some(exp) if self.now > exp.saturating_add(self.skew) => return Err(Invalid::Expired),
            None if self.require_exp => return Err(Invalid::MissingExp),
            _ => {}
        }
        if let Some(nbf) = nbf {
            if self.now.saturating_add(self.skew) < nbf {
                return Err(Invalid::NotYetValid);
            }
        }
        if let Some(iat) = iat {
            if iat > self.now.saturating_add(self.skew) {
                return Err(Invalid::IssuedInFuture);
            }
        }
        if let Some(want) = self.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == want => {}
                _ => return Err(Invalid::Issuer),
            }
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => self.audiences.iter().any(|w| w == a),
                Some(Value::Array(list)) => list.iter().any(|a| {
                    a.as_str()
                        .is_some_and(|a| self.audiences.iter().any(|w| w == a))
                }),
                _ => false,
            };
            if !ok {
                return Err(Invalid::Audience);
            }
        }
        Ok((exp, nbf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn tok(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    const RS: &[Alg] = &[Alg::RS256];

    #[test]
    fn alg_none_in_any_casing_is_refused() {
        for none in ["none", "None", "NONE", "nOnE"] {
            let t = tok(&format!(r#"{{"alg":"{none}"}}"#), "{}");
            assert_eq!(
                parse(&t, 8192, RS).unwrap_err(),
                Invalid::Algorithm,
                "{none}"
            );
        }
        // Unsigned form "header.payload." has an empty signature.
        let t = format!("{}.{}.", b64(r#"{"alg":"RS256"}"#), b64("{}"));
        assert_eq!(parse(&t, 8192, RS).unwrap_err(), Invalid::Malformed);
    }

    #[test]
    fn alg_outside_the_allow_list_or_miscased_is_refused() {
        for alg in [r#""HS256""#, r#""rs256""#, r#"null"#, r#"1"#] {
            let t = tok(&format!(r#"{{"alg":{alg}}}"#), "{}");
            assert_eq!(
                parse(&t, 8192, RS).unwrap_err(),
                Invalid::Algorithm,
                "{alg}"
            );
        }
        let t = tok(r#"{"typ":"JWT"}"#, "{}");
        assert_eq!(parse(&t, 8192, RS).unwrap_err(), Invalid::Algorithm);
    }

    #[test]
    fn crit_is_refused_even_empty() {
        for crit in [r#"["exp"]"#, "[]", r#""x""#] {
            let t = tok(&format!(r#"{{"alg":"RS256","crit":{crit}}}"#), "{}");
            assert_eq!(parse(&t, 8192, RS).unwrap_err(), Invalid::Crit);
        }
        let t = tok(r#"{"alg":"RS256","b64":false}"#, "{}");
        assert_eq!(parse(&t, 8192, RS).unwrap_err(), Invalid::Crit);
    }

    #[test]
    fn duplicate_members_are_refused_at_any_depth() {
        let t = tok(r#"{"alg":"RS256","alg":"HS256"}"#, "{}");
        assert_eq!(parse(&t, 8192, RS).unwrap_err(), Invalid::Malformed);
        assert!(strict_object(br#"{"a":{"b":1,"b":2}}"#).is_none());
        assert!(strict_object(br#"{"a":[{"b":1,"b":2}]}"#).is_none());
        assert!(strict_object(br#"{"a":{"b":1,"c":2}}"#).is_some());
    }

    #[test]
    fn shape_and_base64_are_strict() {
        let good_h = b64(r#"{"alg":"RS256"}"#);
        for bad in [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{good_h}..c2ln"),
            format!("{good_h}=.e30.c2ln"),
            format!("{}.e30.c2ln", b64("[1]")),
            format!("{}.e30.c2ln", b64("not json")),
        ] {
            assert!(parse(&bad, 8192, RS).is_err(), "{bad}");
        }
        assert!(parse(&format!("{good_h}.e30.c2ln"), 8192, RS).is_ok());
        // The signature's characters are checked when it is decoded (once
        // a key was found), strictly: no padding, no `+`.
        for bad_sig in ["c2ln=", "c2l+"] {
            let t = format!("{good_h}.e30.{bad_sig}");
            assert_eq!(
                parse(&t, 8192, RS).unwrap().signature().unwrap_err(),
                Invalid::Malformed
            );
        }
    }

    /// Whenever the scanner answers, serde gives the same `alg` and `kid`
    /// and no extension: over hand-picked edges and 20 000 headers built
    /// from JSON fragments at random.
    #[test]
    fn plain_header_agrees_with_serde() {
        fn serde_view(b: &[u8]) -> Option<(Option<String>, Option<String>)> {
            let h = JoseHeader::parse(b).ok()?;
            if h.extension {
                return None;
            }
            Some((h.alg, h.kid))
        }
        fn check(text: &str) -> bool {
            let Some(p) = plain_header(text.as_bytes()) else {
                return false;
            };
            let want = serde_view(text.as_bytes());
            let got = Some((p.alg.map(str::to_owned), p.kid.map(str::to_owned)));
            assert_eq!(got, want, "{text:?}");
            true
        }
        for t in [
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#" { "alg" : "RS256" } "#,
            "{}",
            "{\t\"kid\":\"\u{e9}\"\r\n}",
        ] {
            assert!(check(t), "{t}");
        }
        // Refused by the strict parser too: duplicates of any member, an
        // array, `crit`/`b64` even when null.
        for t in [
            r#"{"alg":"RS256","typ":"JWT","typ":"x"}"#,
            r#"["RS256","k"]"#,
            r#"{"alg":"RS256","crit":null}"#,
            r#"{"alg":"RS256","b64":null}"#,
        ] {
            assert!(plain_header(t.as_bytes()).is_none(), "{t}");
            let refused = match JoseHeader::parse(t.as_bytes()) {
                Err(_) => true,
                Ok(h) => h.extension,
            };
            assert!(refused, "{t}");
        }
        for t in [
            r#"{"alg":"RS256","alg":"RS256"}"#,
            r#"{"kid":"a","kid":"b"}"#,
            r#"{"alg":"RS\u0032"}"#,
            r#"{"\u0061lg":"none"}"#,
            r#"{"alg":"RS256","crit":"x"}"#,
            r#"{"alg":"RS256","b64":"x"}"#,
            r#"{"alg":5}"#,
            r#"{"alg":"RS256",}"#,
            r#"{"alg":"RS256"}x"#,
            r#"{"alg":"RS256""#,
            "{\"alg\":\"a\u{1}\"}",
            "[]",
            "",
        ] {
            assert!(plain_header(t.as_bytes()).is_none(), "{t}");
        }
        let parts = [
            "{",
            "}",
            "\"alg\"",
            "\"kid\"",
            "\"typ\"",
            "\"crit\"",
            "\"RS256\"",
            "\"k\"",
            ":",
            ",",
            " ",
            "\\",
            "\"",
            "5",
            "null",
            "[",
            "]",
            "\u{e9}",
            "\n",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut answered = 0;
        for _ in 0..20_000 {
            let mut t = String::from("{");
            let n = next() % 12;
            for _ in 0..n {
                t.push_str(parts[(next() % parts.len() as u64) as usize]);
            }
            if next() % 2 == 0 {
                t.push('}');
            }
            answered += usize::from(check(&t));
            // Also well-formed objects, so the scanner's answers are many.
            let members: Vec<String> = (0..next() % 4)
                .map(|_| {
                    let k = ["\"alg\"", "\"kid\"", "\"typ\"", "\"x\""][(next() % 4) as usize];
                    let v =
                        ["\"RS256\"", "\"k1\"", "\"\"", "1", "\"a\\\"b\""][(next() % 5) as usize];
                    format!("{k}:{v}")
                })
                .collect();
            answered += usize::from(check(&format!("{{{}}}", members.join(","))));
        }
        assert!(answered > 5_000, "only {answered} headers were plain");
    }

    #[test]
    fn size_is_checked_first() {
        let t = "x".repeat(9000);
        assert_eq!(parse(&t, 8192, RS).unwrap_err(), Invalid::TooLong);
    }

    #[test]
    fn kid_must_be_a_string() {
        let t = tok(r#"{"alg":"RS256","kid":5}"#, "{}");
        assert_eq!(parse(&t, 8192, RS).unwrap_err(), Invalid::Malformed);
        let t = tok(r#"{"alg":"RS256","kid":"k1","jku":"http://evil/"}"#, "{}");
        assert_eq!(parse(&t, 8192, RS).unwrap().kid.as_deref(), Some("k1"));
    }

    fn rules<'a>(aud: &'a [String]) -> TimeRules<'a> {
        TimeRules {
            now: 1000,
            skew: 60,
            require_exp: true,
            issuer: Some("iss"),
            audiences: aud,
        }
    }

    fn claims(json: &str) -> Map<String, Value> {
        strict_object(json.as_bytes()).unwrap()
    }

    #[test]
    fn time_and_identity_claims() {
        let aud = vec!["api".to_string()];
        let r = rules(&aud);
        let ok = claims(r#"{"iss":"iss","aud":"api","exp":1100}"#);
        assert_eq!(r.check(&ok).unwrap(), (Some(1100), None));
        assert_eq!(
            r.check(&claims(r#"{"iss":"iss","aud":"api","exp":900}"#)),
            Err(Invalid::Expired)
        );
        // Inside the skew.
        assert!(r
            .check(&claims(r#"{"iss":"iss","aud":"api","exp":950}"#))
            .is_ok());
        assert_eq!(
            r.check(&claims(r#"{"iss":"iss","aud":"api"}"#)),
            Err(Invalid::MissingExp)
        );
        assert_eq!(
            r.check(&claims(
                r#"{"iss":"iss","aud":"api","exp":2000,"nbf":1100}"#
            )),
            Err(Invalid::NotYetValid)
        );
        assert_eq!(
            r.check(&claims(
                r#"{"iss":"iss","aud":"api","exp":2000,"iat":1100}"#
            )),
            Err(Invalid::IssuedInFuture)
        );
        assert_eq!(
            r.check(&claims(r#"{"iss":"other","aud":"api","exp":2000}"#)),
            Err(Invalid::Issuer)
        );
        assert_eq!(
            r.check(&claims(r#"{"iss":"iss","aud":["x","y"],"exp":2000}"#)),
            Err(Invalid::Audience)
        );
        assert!(r
            .check(&claims(r#"{"iss":"iss","aud":["x","api"],"exp":2000}"#))
            .is_ok());
        assert_eq!(
            r.check(&claims(r#"{"iss":"iss","aud":"api","exp":"2000"}"#)),
            Err(Invalid::Malformed)
        );
    }

    #[test]
    fn claim_paths_and_rendering() {
        let c = claims(r#"{"realm_access":{"roles":["a","b",3]},"n":5,"s":"x y","o":{"k":true}}"#);
        assert_eq!(
            claim_text(claim(&c, "realm_access.roles").unwrap()),
            "a,b,3"
        );
        assert_eq!(claim_text(claim(&c, "n").unwrap()), "5");
        assert_eq!(claim_text(claim(&c, "o").unwrap()), r#"{"k":true}"#);
        assert!(claim(&c, "realm_access.nope").is_none());
        assert!(claim(&c, "n.x").is_none());
        assert_eq!(claim_items(claim(&c, "s").unwrap()), vec!["x", "y"]);
    }
}
