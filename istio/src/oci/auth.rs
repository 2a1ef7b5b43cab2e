//! Registry credentials from the Docker config file, the default keychain
//! istio-agent (go-containerregistry) and skopeo/buildah also read:
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`,
//! `auths.<host>.auth` = base64(`user:password`).

use std::path::{Path, PathBuf};

use base64::Engine;

use super::reference::DOCKER_HUB;
use super::registry::Credentials;

/// The Docker config file that would be read.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Credentials for `registry` from the Docker config, if it has any.
/// A missing file is no credentials; an unreadable or malformed one is an
/// error (silently pulling anonymously would hide it).
pub fn docker_credentials(registry: &str) -> Result<Option<Credentials>, String> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    match std::fs::read(&path) {
        Ok(bytes) => from_config(&bytes, registry).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The `auths` entry for `registry` in a Docker config document. Keys may
/// be `host`, `https://host`, `https://host/v1/`; Docker Hub is stored as
/// `https://index.docker.io/v1/`.
pub fn from_config(bytes: &[u8], registry: &str) -> Result<Option<Credentials>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a Docker config file: {e}"))?;
    let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let host_of = |key: &str| -> String {
        let k = key.split_once("://").map(|(_, r)| r).unwrap_or(key);
        k.split('/').next().unwrap_or(k).to_string()
    };
    let wanted = |h: &str| {
        h == registry
            || (registry == DOCKER_HUB && matches!(h, "docker.io" | "registry-1.docker.io"))
    };
    let Some((key, entry)) = auths.iter().find(|(k, _)| wanted(&host_of(k))) else {
        return Ok(None);
    };
    if let Some(auth) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auths.{key}.auth is not base64: {e}"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| format!("auths.{key}.auth is not UTF-8 user:password"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| format!("auths.{key}.auth is not base64 of user:password"))?;
        return Ok(Some(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        }));
    }
    let field = |f: &str| entry.get(f).and_then(|v| v.as_str()).map(str::to_string);
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
        _ => Ok(None),
    }
}

/// A Docker config document with one `auths` entry (what tests and
/// `docker login` write).
pub fn config_json(registry: &str, creds: &Credentials) -> String {
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.password));
    serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string()
}

/// Writes `config_json` to `dir/config.json` (a `DOCKER_CONFIG` directory).
pub fn write_config(dir: &Path, registry: &str, creds: &Credentials) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("config.json");
    std::fs::write(&path, config_json(registry, creds))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn finds_the_registry_entry_in_any_key_form() {
        let doc = config_json("127.0.0.1:5000", &creds("ci", "s3:cret"));
        assert_eq!(
            from_config(doc.as_bytes(), "127.0.0.1:5000").unwrap(),
            Some(creds("ci", "s3:cret"))
        );
        assert_eq!(from_config(doc.as_bytes(), "other:5000").unwrap(), None);
        let hub = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#;
        assert_eq!(
            from_config(hub.as_bytes(), DOCKER_HUB).unwrap(),
            Some(creds("u", "p"))
        );
        let plain = r#"{"auths":{"https://r.example":{"username":"a","password":"b"}}}"#;
        assert_eq!(
            from_config(plain.as_bytes(), "r.example").unwrap(),
            Some(creds("a", "b"))
        );
        assert_eq!(
            from_config(br#"{"credsStore":"desktop"}"#, "r.example").unwrap(),
            None
        );
    }

    #[test]
    fn malformed_entries_are_errors() {
        let err = from_config(br#"{"auths":{"r":{"auth":"!!"}}}"#, "r").unwrap_err();
        assert!(err.contains("not base64"), "{err}");
        let err = from_config(br#"{"auths":{"r":{"auth":"dXNlcg=="}}}"#, "r").unwrap_err();
        assert!(err.contains("user:password"), "{err}");
        assert!(from_config(b"nope", "r")
            .unwrap_err()
            .contains("not a Docker config"));
    }
}
