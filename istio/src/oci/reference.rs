//! `oci://registry/repo[:tag][@sha256:…]`, read the way a WasmPlugin `url`
//! is (go-containerregistry's `name.ParseReference`): no scheme means oci,
//! a first path part without `.`/`:` (and not `localhost`) is a Docker Hub
//! repository.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host` or `host:port` as used in URLs and Docker config keys.
    pub registry: String,
    /// `team/filter`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned.
    pub digest: Option<String>,
}

pub const DOCKER_HUB: &str = "index.docker.io";

impl Reference {
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("`{url}`: {why}; expected oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]")
        };
        let rest = match url.split_once("://") {
            Some(("oci", rest)) => rest,
            Some((scheme, _)) => return Err(bad(&format!("scheme `{scheme}` is not oci"))),
            None => url,
        };
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(bad("the digest is not 64 lower-case hex digits"));
                }
                (r, Some(d.to_string()))
            }
            None => (rest, None),
        };
        // A tag is after the last `:` that follows the last `/` (a port's
        // `:` comes before a `/`).
        let last_slash = rest.rfind('/').unwrap_or(0);
        let (name, tag) = match rest.rfind(':') {
            Some(i) if i > last_slash => {
                let (name, tag) = rest.split_at(i);
                (name, Some(tag.strip_prefix(':').unwrap_or(tag).to_string()))
            }
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(bad(&format!("`{t}` is not a valid tag")));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, repo))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), repo.to_string())
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
            });
        if !repo_ok || registry.is_empty() {
            return Err(bad(&format!(
                "`{repository}` is not a repository name (lower-case letters, digits, . _ - and /)"
            )));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to put in `/v2/<repo>/manifests/<here>`: the digest if pinned.
    pub fn tag_or_digest(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }

    /// `oci://registry/repo:tag[@digest]`, a WasmPlugin `url`.
    pub fn oci_url(&self) -> String {
        format!("oci://{self}")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_wasmplugin_url_may_say() {
        let r = Reference::parse("oci://127.0.0.1:5000/mg/ab-routing:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "mg/ab-routing");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.oci_url(), "oci://127.0.0.1:5000/mg/ab-routing:v1");

        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost:5000", Some("latest"))
        );

        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("oci://ghcr.io/o/f@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_digest(), d);

        let r = Reference::parse("istio/filter:1.0").unwrap();
        assert_eq!(r.registry, DOCKER_HUB);
        assert_eq!(r.repository, "istio/filter");
        let r = Reference::parse("filter").unwrap();
        assert_eq!(r.repository, "library/filter");
    }

    #[test]
    fn refuses_what_is_not_a_reference() {
        for bad in [
            "http://r.example/x:1",
            "oci://r.example/X:1",
            "oci://r.example/x:",
            "oci://r.example/x@sha512:aa",
            "oci://r.example/x@sha256:abc",
            "oci://r.example/",
        ] {
            let err = Reference::parse(bad).unwrap_err();
            assert!(err.contains("expected oci://"), "{bad}: {err}");
        }
    }
}
