//! JWKS documents → verifying keys, each bound to the algorithms it may
//! verify. Inline sets are strict (a bad key is a config error); fetched
//! sets skip bad keys (counted and logged) and are refused only when no
//! usable key is left, so the last good set stays in use.

use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use meshguard_common::config::json_value;
use serde_json::Value;

use meshguard_authn_crypto::{Alg, KeyError, VerifyingKey};

use crate::jwt::Invalid;

pub struct KeyEntry {
    pub kid: Option<String>,
    /// The JWK's own `alg`, if it names one: the only algorithm it verifies.
    pub alg: Option<Alg>,
    pub key: VerifyingKey,
}

impl KeyEntry {
    fn accepts(&self, alg: Alg) -> bool {
        self.alg.is_none_or(|a| a == alg) && self.key.accepts(alg)
    }
}

#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<Rc<KeyEntry>>,
}

/// What a fetched set had that could not be used.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// RSA keys under 2048 bits.
    pub weak: u32,
    /// Anything else: unknown `kty`/`crv`, bad encoding, `use: enc`, an
    /// algorithm this provider does not allow.
    pub other: u32,
}

impl KeySet {
    /// The key for a token: by `kid`, else the only key that fits.
    pub fn select(&self, kid: Option<&str>, alg: Alg) -> Result<&KeyEntry, Invalid> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.accepts(alg))
                .map(|k| k.as_ref())
                .ok_or(Invalid::UnknownKey),
            None => {
                let mut fits = self.keys.iter().filter(|k| k.accepts(alg));
                match (fits.next(), fits.next()) {
                    (Some(k), None) => Ok(k),
                    (None, _) => Err(Invalid::UnknownKey),
                    // Trying every key would let one junk token cost many
                    // signature checks.
                    (Some(_), Some(_)) => Err(Invalid::KidRequired),
                }
            }
        }
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn b64(v: Option<&Value>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(v?.as_str()?).ok()
}

/// One JWK → a key, or why not.
fn jwk(v: &Value, allowed: &[Alg]) -> Result<KeyEntry, String> {
    let obj = v.as_object().ok_or("not an object")?;
    if let Some(u) = obj.get("use") {
        if u.as_str() != Some("sig") {
            return Err("`use` is not `sig`".into());
        }
    }
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("`kid` is not a string".into()),
    };
    let alg = match obj.get("alg") {
        None => None,
        Some(Value::String(a)) => {
            Some(Alg::from_jose(a).ok_or_else(|| format!("`alg` {a:?} is not supported"))?)
        }
        Some(_) => return Err("`alg` is not a string".into()),
    };
    let kty = obj.get("kty").and_then(Value::as_str).ok_or("no `kty`")?;
    let key = match kty {
        "RSA" => {
            let n = b64(obj.get("n")).ok_or("bad `n`")?;
            let e = b64(obj.get("e")).ok_or("bad `e`")?;
            VerifyingKey::rsa(&n, &e)
        }
        "EC" => {
            let crv = obj.get("crv").and_then(Value::as_str).ok_or("no `crv`")?;
            let x = b64(obj.get("x")).ok_or("bad `x`")?;
            let y = b64(obj.get("y")).ok_or("bad `y`")?;
            VerifyingKey::ec(crv, &x, &y)
        }
        "OKP" => {
            if obj.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                return Err("OKP key is not Ed25519".into());
            }
            let x = b64(obj.get("x")).ok_or("bad `x`")?;
            VerifyingKey::ed25519(&x)
        }
        "oct" => {
            let k = b64(obj.get("k")).ok_or("bad `k`")?;
            VerifyingKey::hmac(&k)
        }
        other => return Err(format!("`kty` {other:?} is not supported")),
    }
    .map_err(|e| match e {
        KeyError::RsaTooSmall { bits } => {
            format!("weak:RSA key has {bits} bits, at least 2048 required")
        }
        other => other.to_string(),
    })?;
    let entry = KeyEntry { kid, alg, key };
    if !allowed.iter().any(|a| entry.accepts(*a)) {
        return Err("fits none of the provider's algorithms".into());
    }
    Ok(entry)
}

fn keys_array(doc: &Value) -> Result<&Vec<Value>, String> {
    doc.get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "expected a JWKS object with a `keys` array".to_string())
}

/// An inline JWKS: every key must be usable. Errors name the key index.
pub fn parse_inline(doc: &Value, allowed: &[Alg]) -> Result<KeySet, (Option<usize>, String)> {
    let owned;
    let doc = match doc {
        Value::String(s) => {
            owned = json_value(s.as_bytes()).map_err(|e| (None, format!("not JSON: {e}")))?;
            &owned
        }
        other => other,
    };
    let list = keys_array(doc).map_err(|e| (None, e))?;
    let mut set = KeySet::default();
    for (i, k) in list.iter().enumerate() {
        let entry =
            jwk(k, allowed).map_err(|e| (Some(i), e.trim_start_matches("weak:").to_string()))?;
        set.keys.push(Rc::new(entry));
    }
    if set.is_empty() {
        return Err((None, "the JWKS has no keys".into()));
    }
    Ok(set)
}

/// A fetched JWKS: unusable keys are skipped. `Err` when the document is
/// not a JWKS or no key is usable (the caller keeps its last good set).
pub fn parse_fetched(bytes: &[u8], allowed: &[Alg]) -> Result<(KeySet, Skipped), String> {
    let doc: Value = json_value(bytes).map_err(|_| "not JSON".to_string())?;
    let list = keys_array(&doc)?;
    let mut set = KeySet::default();
    let mut skipped = Skipped::default();
    for (i, k) in list.iter().enumerate() {
        match jwk(k, allowed) {
            Ok(entry) => set.keys.push(Rc::new(entry)),
            Err(e) if e.starts_with("weak:") => {
                skipped.weak += 1;
                log::warn!(
                    "authn: JWKS key {i} skipped: {}",
                    e.trim_start_matches("weak:")
                );
            }
            Err(e) => {
                skipped.other += 1;
                log::info!("authn: JWKS key {i} skipped: {e}");
            }
        }
    }
    if set.is_empty() {
        return Err(format!("no usable key among {}", list.len()));
    }
    Ok((set, skipped))
}

/// `jwks_uri` from an OIDC discovery document, split into authority and
/// path (fetched through the same cluster).
pub fn discovery_jwks_uri(bytes: &[u8]) -> Result<(String, String), String> {
    let doc: Value = json_value(bytes).map_err(|_| "not JSON".to_string())?;
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or("no `jwks_uri`")?;
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or("`jwks_uri` is not an http(s) URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("/")),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.len() > 255
        || path.len() > 2048
        || uri.bytes().any(|b| b <= 0x20 || b == 0x7f)
    {
        return Err("`jwks_uri` is not a usable URL".into());
    }
    Ok((authority.to_string(), path.to_string()))
}
