//! `meshguard sign`: signs a request the way authn's `hmac` rules verify it
//! (RFC 9421 `hmac-sha256`, RFC 9530 `Content-Digest`), with the filter's
//! own code (`meshguard_authn::msgsig`). For trying a rule with curl; real
//! clients use a maintained RFC 9421 library (README).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use meshguard_authn::msgsig;
use meshguard_authn::sf::Bare;
use meshguard_authn_crypto::HmacSha256;

pub const USAGE: &str =
    "  meshguard sign METHOD URL --key-id ID (--secret-file FILE | --secret-env VAR)
                 [--body-file FILE | --body TEXT] [--header 'NAME: VALUE' ...]
                 [--component C ...] [--nonce N] [--expires-in SECONDS] [--label L]
      Prints the headers that sign the request (RFC 9421 hmac-sha256): with
      a body, Content-Digest (sha-256); then Signature-Input and Signature,
      one `Name: value` per line (curl -H). The secret is the key's bytes,
      base64, as in the authn config. Components default to @method
      @authority @path @query, plus content-digest with a body; --header
      adds a header to the request (cover it with --component NAME).";

fn split_url(url: &str) -> Result<(String, String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url}: expected http://host[:port]/path"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url}: expected an http or https URL"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok((scheme, authority.to_string(), path))
}

pub fn sign(args: &[String]) -> Result<String, String> {
    let mut positional = Vec::new();
    let mut key_id = None;
    let mut secret_b64 = None;
    let mut body: Option<Vec<u8>> = None;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut components: Vec<String> = Vec::new();
    let mut nonce = None;
    let mut expires_in: Option<i64> = None;
    let mut label = "sig1".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--key-id" => key_id = Some(val()?),
            "--secret-file" => {
                let f = val()?;
                secret_b64 = Some(std::fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?);
            }
            "--secret-env" => {
                let v = val()?;
                secret_b64 = Some(std::env::var(&v).map_err(|_| format!("${v} is not set"))?);
            }
            "--body" => body = Some(val()?.into_bytes()),
            "--body-file" => {
                let f = val()?;
                body = Some(std::fs::read(&f).map_err(|e| format!("{f}: {e}"))?);
            }
            "--header" => {
                let h = val()?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header {h}: expected 'NAME: VALUE'"))?;
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            "--component" => components.push(val()?),
            "--nonce" => nonce = Some(val()?),
            "--expires-in" => {
                expires_in = Some(
                    val()?
                        .parse()
                        .map_err(|_| "--expires-in: expected seconds".to_string())?,
                )
            }
            "--label" => label = val()?,
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{USAGE}")),
            _ => positional.push(a.clone()),
        }
    }
    let [method, url] = positional.as_slice() else {
        return Err(format!("expected METHOD and URL\n{USAGE}"));
    };
    let key_id = key_id.ok_or_else(|| format!("--key-id is required\n{USAGE}"))?;
    let secret =
        secret_b64.ok_or_else(|| format!("--secret-file or --secret-env is required\n{USAGE}"))?;
    // Never echo the secret, even in an error.
    let secret = STANDARD
        .decode(secret.trim())
        .map_err(|_| "the secret is not base64 (standard alphabet)".to_string())?;
    let mac = HmacSha256::new(&secret).ok_or_else(|| "the secret is empty".to_string())?;
    let (scheme, authority, path) = split_url(url)?;
    let mut h: Vec<(String, String)> = vec![
        (":method".into(), method.to_ascii_uppercase()),
        (":path".into(), path),
        (":authority".into(), authority),
        (":scheme".into(), scheme),
    ];
    h.extend(headers);
    let mut out = String::new();
    if let Some(b) = &body {
        let d = msgsig::digest_header(b);
        out.push_str(&format!("Content-Digest: {d}\n"));
        h.push(("content-digest".into(), d));
    }
    if components.is_empty() {
        components = ["@method", "@authority", "@path", "@query"]
            .map(String::from)
            .to_vec();
        if body.is_some() {
            components.push("content-digest".into());
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut params = vec![("created".to_string(), Bare::Integer(now))];
    if let Some(e) = expires_in {
        params.push(("expires".into(), Bare::Integer(now + e)));
    }
    if let Some(n) = nonce {
        params.push(("nonce".into(), Bare::String(n)));
    }
    params.push(("keyid".into(), Bare::String(key_id)));
    params.push(("alg".into(), Bare::String("hmac-sha256".into())));
    let comps: Vec<&str> = components.iter().map(String::as_str).collect();
    let (input, signature) = msgsig::sign(&h, &mac, &label, &comps, &params).map_err(|e| {
        format!(
            "cannot sign: {} (is every --component present in the request?)",
            e.description()
        )
    })?;
    out.push_str(&format!(
        "Signature-Input: {input}\nSignature: {signature}\n"
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/signed/x?a=1").unwrap(),
            (
                "http".into(),
                "127.0.0.1:8080".into(),
                "/signed/x?a=1".into()
            )
        );
        assert_eq!(split_url("https://example.com").unwrap().2, "/".to_string());
        assert_eq!(split_url("http://h?q").unwrap().2, "/?q".to_string());
        assert!(split_url("ftp://h/").is_err());
        assert!(split_url("h/x").is_err());
    }

    #[test]
    fn signs_and_never_echoes_the_secret() {
        let secret = STANDARD.encode(b"partner-a shared secret, 32+ bytes long");
        std::env::set_var("MG_SIGN_TEST_SECRET", &secret);
        let args: Vec<String> = [
            "POST",
            "http://shop.example.com/signed/orders?id=7",
            "--key-id",
            "partner-a",
            "--secret-env",
            "MG_SIGN_TEST_SECRET",
            "--body",
            "{\"hello\": \"world\"}",
        ]
        .map(String::from)
        .to_vec();
        let out = sign(&args).unwrap();
        assert!(
            out.contains("Content-Digest: sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")
        );
        assert!(out.contains("Signature-Input: sig1=(\"@method\" \"@authority\" \"@path\" \"@query\" \"content-digest\");created="));
        assert!(out.contains(";keyid=\"partner-a\";alg=\"hmac-sha256\""));
        assert!(!out.contains(&secret));
        std::env::set_var("MG_SIGN_TEST_SECRET", "!!not base64 secretvalue");
        let err = sign(&args).unwrap_err();
        assert!(!err.contains("secretvalue"), "{err}");
    }
}
