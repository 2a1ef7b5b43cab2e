//! `meshguard token`: a demo JWT for the local chain (`make run`), signed
//! with the checked-in demo keys (deploy/local/demo-keys: FOR LOCAL USE
//! ONLY) or a key file you pass.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const DEMO_RSA: &str = include_str!("../../deploy/local/demo-keys/rsa.pem");
const DEMO_EC: &str = include_str!("../../deploy/local/demo-keys/ec.pem");
/// The issuer and audience of the local authn config.
pub const DEMO_ISSUER: &str = "https://demo.meshguard.local";
pub const DEMO_AUDIENCE: &str = "shop";

pub const USAGE: &str = "  meshguard token [--sub USER] [--alg RS256|ES256] [--ttl SECONDS]
                  [--claim NAME=JSON ...] [--key PEM --kid KID] [--iss ISS] [--aud AUD]
      Prints a JWT the local chain (`make run`) accepts: signed with the
      demo keys in deploy/local/demo-keys (FOR LOCAL USE ONLY) unless --key
      names a PEM private key. Defaults: --sub alice, --alg RS256,
      --ttl 3600, iss https://demo.meshguard.local, aud shop.";

pub fn token(args: &[String]) -> Result<String, String> {
    let mut sub = "alice".to_string();
    let mut alg = Algorithm::RS256;
    let mut ttl: i64 = 3600;
    let mut iss = DEMO_ISSUER.to_string();
    let mut aud = DEMO_AUDIENCE.to_string();
    let mut key_file: Option<String> = None;
    let mut kid: Option<String> = None;
    let mut extra: Vec<(String, Value)> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--sub" => sub = val()?,
            "--alg" => {
                alg = match val()?.as_str() {
                    "RS256" => Algorithm::RS256,
                    "ES256" => Algorithm::ES256,
                    other => return Err(format!("--alg {other}: expected RS256 or ES256")),
                }
            }
            "--ttl" => {
                ttl = val()?
                    .parse()
                    .map_err(|_| "--ttl: expected seconds (may be negative)".to_string())?
            }
            "--iss" => iss = val()?,
            "--aud" => aud = val()?,
            "--key" => key_file = Some(val()?),
            "--kid" => kid = Some(val()?),
            "--claim" => {
                let v = val()?;
                let (k, j) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--claim {v}: expected NAME=JSON"))?;
                let parsed = serde_json::from_str(j).unwrap_or(Value::String(j.to_string()));
                extra.push((k.to_string(), parsed));
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut claims = json!({"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": now + ttl});
    for (k, v) in extra {
        claims[k] = v;
    }
    let pem = match &key_file {
        Some(f) => std::fs::read(f).map_err(|e| format!("{f}: {e}"))?,
        None => match alg {
            Algorithm::ES256 => DEMO_EC.as_bytes().to_vec(),
            _ => DEMO_RSA.as_bytes().to_vec(),
        },
    };
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .map_err(|e| format!("signing key: {e}"))?;
    let mut header = Header::new(alg);
    header.kid = Some(match (kid, &key_file) {
        (Some(k), _) => k,
        (None, None) if alg == Algorithm::ES256 => "demo-ec".into(),
        (None, None) => "demo-rsa".into(),
        (None, Some(_)) => return Err("--key needs --kid".into()),
    });
    let t = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("signing: {e}"))?;
    Ok(format!("{t}\n"))
}
