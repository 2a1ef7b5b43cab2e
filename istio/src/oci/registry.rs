//! A small blocking client for the OCI distribution API: the handful of
//! calls push and pull need (manifest GET/PUT, blob HEAD/GET, monolithic
//! upload POST+PUT) and the two auth schemes registries use (Basic, and
//! Bearer tokens from the `WWW-Authenticate` challenge).
//!
//! Why not the `oci-client` crate: it is async (tokio + reqwest), which a
//! one-shot CLI does not need, and it hides what we must control to match
//! istio-agent byte for byte: the exact manifest bytes and media type we
//! PUT, and verification of every blob against its digest and size on pull.
//! This is ~300 lines over `ureq` (rustls, no OpenSSL).

use std::io::Read;
use std::time::Duration;

use base64::Engine;

use super::digest_of;
use super::image::{
    Descriptor, Index, Manifest, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
};
use super::reference::Reference;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Talk plain HTTP (a local registry). Never chosen automatically.
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
    /// Where the credentials came from, for error messages.
    pub credentials_source: Option<String>,
}

/// Manifests larger than this are refused (go-containerregistry's limit is
/// similar in spirit: a manifest is a small JSON document).
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

pub struct Client {
    registry: String,
    base: String,
    agent: ureq::Agent,
    opts: Options,
    /// `Authorization` header value once a challenge has been answered.
    auth: Option<String>,
}

enum Body<'a> {
    None,
    Bytes(&'a [u8], &'a str),
}

impl Client {
    pub fn new(registry: &str, opts: Options) -> Self {
        let scheme = if opts.plain_http { "http" } else { "https" };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .user_agent(concat!("meshguard/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            registry: registry.to_string(),
            base: format!("{scheme}://{registry}"),
            agent,
            opts,
            auth: None,
        }
    }

    /// The URL of a blob, e.g. for Envoy's `code.remote.http_uri`.
    pub fn blob_url(&self, repo: &str, digest: &str) -> String {
        format!("{}/v2/{repo}/blobs/{digest}", self.base)
    }

    /// Uploads a blob unless the registry has it already.
    pub fn push_blob(&mut self, repo: &str, digest: &str, bytes: &[u8]) -> Result<(), String> {
        let scope = format!("repository:{repo}:pull,push");
        let url = self.blob_url(repo, digest);
        match self.send("HEAD", &url, &[], Body::None, &scope) {
            Ok(_) => return Ok(()),
            Err(Failure::Status(404, _)) => {}
            Err(f) => return Err(self.explain(f, &format!("checking blob {digest}"))),
        }
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let r = self
            .send("POST", &url, &[], Body::None, &scope)
            .map_err(|f| self.explain(f, &format!("starting the upload of blob {digest}")))?;
        let location = r
            .header("location")
            .ok_or("the registry started an upload without a Location header")?
            .to_string();
        let mut put = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{}", self.base, location)
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str("digest=");
        put.push_str(digest);
        self.send(
            "PUT",
            &put,
            &[],
            Body::Bytes(bytes, "application/octet-stream"),
            &scope,
        )
        .map_err(|f| self.explain(f, &format!("uploading blob {digest}")))?;
        Ok(())
    }

    /// PUTs manifest bytes as `media_type`; returns their digest (checked
    /// against the registry's `Docker-Content-Digest`).
    pub fn push_manifest(
        &mut self,
        repo: &str,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, String> {
        let scope = format!("repository:{repo}:pull,push");
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base);
        let r = self
            .send("PUT", &url, &[], Body::Bytes(bytes, media_type), &scope)
            .map_err(|f| self.explain(f, &format!("pushing the manifest ({media_type})")))?;
        let digest = digest_of(bytes);
        if let Some(theirs) = r.header("docker-content-digest") {
            if theirs != digest {
                return Err(format!(
                    "the registry stored the manifest as {theirs}, but its bytes hash to {digest}"
                ));
            }
        }
        Ok(digest)
    }

    /// GETs raw manifest bytes and their content type.
    pub fn get_manifest(
        &mut self,
        repo: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String), String> {
        let scope = format!("repository:{repo}:pull");
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let r = self
            .send(
                "GET",
                &url,
                &[("accept", ACCEPT_MANIFESTS)],
                Body::None,
                &scope,
            )
            .map_err(|f| self.explain(f, &format!("fetching manifest {repo}:{reference}")))?;
        let ct = r.content_type().to_string();
        let expected = r.header("docker-content-digest").map(str::to_string);
        let bytes = read_limited(r, MAX_MANIFEST, "manifest")?;
        let digest = digest_of(&bytes);
        let pinned = reference.starts_with("sha256:").then_some(reference);
        for want in pinned.into_iter().chain(expected.as_deref()) {
            if want != digest {
                return Err(format!(
                    "manifest {repo}:{reference} hashes to {digest}, not {want}: tampered or corrupted"
                ));
            }
        }
        Ok((bytes, ct))
    }

    /// The image a reference names, as istio-agent resolves it
    /// (`desc.Image()`): an index resolves to its linux/amd64 child. Returns
    /// the manifest and its digest (what a WasmPlugin `sha256` is checked
    /// against).
    pub fn resolve_image(&mut self, r: &Reference) -> Result<(Manifest, String), String> {
        let (mut bytes, mut ct) = self.get_manifest(&r.repository, &r.tag_or_digest())?;
        let kind = |bytes: &[u8], ct: &str| -> String {
            serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| ct.to_string())
        };
        let k = kind(&bytes, &ct);
        if k == MEDIA_OCI_INDEX || k == MEDIA_DOCKER_LIST {
            let index: Index = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: the index is not valid JSON: {e}", r.oci_url()))?;
            let child = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .ok_or_else(|| {
                    format!(
                        "{} is an image index without a linux/amd64 image, the one istio-agent picks; push a single manifest",
                        r.oci_url()
                    )
                })?;
            (bytes, ct) = self.get_manifest(&r.repository, &child.digest)?;
        }
        let k = kind(&bytes, &ct);
        if k != MEDIA_OCI_MANIFEST && k != MEDIA_DOCKER_MANIFEST && !k.is_empty() {
            return Err(format!(
                "{}: the manifest has media type {k}, not an image manifest",
                r.oci_url()
            ));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: the manifest is not an image manifest: {e}",
                r.oci_url()
            )
        })?;
        Ok((manifest, digest_of(&bytes)))
    }

    /// GETs a blob, refusing more than `limit` bytes and any content whose
    /// size or sha256 differs from the descriptor.
    pub fn pull_blob(&mut self, repo: &str, d: &Descriptor, limit: u64) -> Result<Vec<u8>, String> {
        if d.size > limit {
            return Err(format!(
                "layer {} is {} bytes, over the size limit of {limit} bytes",
                d.digest, d.size
            ));
        }
        let scope = format!("repository:{repo}:pull");
        let url = self.blob_url(repo, &d.digest);
        let r = self
            .send("GET", &url, &[], Body::None, &scope)
            .map_err(|f| self.explain(f, &format!("fetching blob {}", d.digest)))?;
        let bytes = read_limited(r, d.size, "blob")?;
        let digest = digest_of(&bytes);
        if bytes.len() as u64 != d.size || digest != d.digest {
            return Err(format!(
                "blob {} from the registry is {} bytes with digest {digest}: tampered or corrupted",
                d.digest,
                bytes.len()
            ));
        }
        Ok(bytes)
    }

    fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        scope: &str,
    ) -> Result<ureq::Response, Failure> {
        let mut answered = false;
        loop {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = &self.auth {
                req = req.set("authorization", a);
            }
            let result = match &body {
                Body::None => req.call(),
                Body::Bytes(b, ct) => req.set("content-type", ct).send_bytes(b),
            };
            match result {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if !answered => {
                    answered = true;
                    let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
                    self.auth = Some(self.answer(&challenge, scope)?);
                }
                Err(ureq::Error::Status(401, r)) => {
                    return Err(Failure::AuthRejected(error_text(r)));
                }
                Err(ureq::Error::Status(code, r)) => {
                    return Err(Failure::Status(code, error_text(r)))
                }
                Err(ureq::Error::Transport(t)) => return Err(Failure::Transport(t.to_string())),
            }
        }
    }

    /// The `Authorization` value answering a `WWW-Authenticate` challenge.
    fn answer(&self, challenge: &str, scope: &str) -> Result<String, Failure> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = self.opts.credentials.as_ref().map(|c| {
            let raw = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        });
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or(Failure::NoCredentials);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Failure::Status(
                401,
                format!("unsupported authentication challenge `{challenge}`"),
            ));
        }
        let p = challenge_params(params);
        let realm = p
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                Failure::Status(
                    401,
                    format!("bearer challenge without realm: `{challenge}`"),
                )
            })?;
        let mut req = self.agent.get(&realm);
        if let Some((_, service)) = p.iter().find(|(k, _)| k == "service") {
            req = req.query("service", service);
        }
        let scope = p
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str())
            .unwrap_or(scope);
        req = req.query("scope", scope);
        if let Some(b) = &basic {
            req = req.set("authorization", b);
        }
        let r = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(401 | 403, r)) => {
                return Err(if basic.is_some() {
                    Failure::AuthRejected(error_text(r))
                } else {
                    Failure::NoCredentials
                })
            }
            Err(ureq::Error::Status(code, r)) => {
                return Err(Failure::Status(
                    code,
                    format!("token service {realm}: {}", error_text(r)),
                ))
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(Failure::Transport(format!("token service {realm}: {t}")))
            }
        };
        let body = read_limited(r, 1024 * 1024, "token").map_err(Failure::Transport)?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Failure::Status(200, format!("token service {realm}: bad answer: {e}")))?;
        let token = doc
            .get("token")
            .or_else(|| doc.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| {
                Failure::Status(200, format!("token service {realm} returned no token"))
            })?;
        Ok(format!("Bearer {token}"))
    }

    fn explain(&self, f: Failure, doing: &str) -> String {
        let reg = &self.registry;
        let creds = self
            .opts
            .credentials_source
            .clone()
            .unwrap_or_else(|| "the given credentials".into());
        match f {
            Failure::Transport(e) => {
                let hint = if self.opts.plain_http {
                    String::new()
                } else {
                    " (a registry that speaks plain HTTP needs --plain-http)".into()
                };
                format!("{doing}: cannot reach registry {reg}: {e}{hint}")
            }
            Failure::NoCredentials => format!(
                "{doing}: registry {reg} requires authentication and no credentials were given \
                 (add `auths.\"{reg}\"` to the Docker config, {}, or pass --username and --password-stdin)",
                super::auth::docker_config_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.docker/config.json".into())
            ),
            Failure::AuthRejected(e) => {
                format!("{doing}: registry {reg} rejected {creds} (authentication failed): {e}")
            }
            Failure::Status(404, e) => format!("{doing}: not found on registry {reg}: {e}"),
            Failure::Status(code @ (400 | 415), e) => {
                format!("{doing}: registry {reg} rejected it ({code}): {e}")
            }
            Failure::Status(code, e) => format!("{doing}: registry {reg} answered {code}: {e}"),
        }
    }
}

#[derive(Debug)]
enum Failure {
    Transport(String),
    NoCredentials,
    AuthRejected(String),
    Status(u16, String),
}

/// A distribution error body (`{"errors":[{"code","message","detail"}]}`)
/// as one line, or the raw body.
fn error_text(r: ureq::Response) -> String {
    let status = r.status_text().to_string();
    let mut body = Vec::new();
    let _ = r.into_reader().take(64 * 1024).read_to_end(&mut body);
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(errors) = doc.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    let s = |k: &str| {
                        e.get(k)
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    };
                    let detail = e
                        .get("detail")
                        .filter(|d| !d.is_null())
                        .map(|d| format!(" ({d})"));
                    format!(
                        "{}: {}{}",
                        s("code"),
                        s("message"),
                        detail.unwrap_or_default()
                    )
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
    }
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if text.is_empty() {
        status
    } else {
        text.chars().take(300).collect()
    }
}

fn read_limited(r: ureq::Response, limit: u64, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.into_reader()
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("reading the {what}: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("the {what} is larger than {limit} bytes"));
    }
    Ok(out)
}

/// `realm="…",service="…",scope="…"` → pairs (quoted values may hold commas).
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((v, t)) => (v.to_string(), t),
                None => (q.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, t)) => (v.trim().to_string(), t),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = tail.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_params() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
    }

    #[test]
    fn unreachable_registry_is_a_clear_error() {
        // Port 9 (discard) on loopback: nothing listens there.
        let mut c = Client::new(
            "127.0.0.1:9",
            Options {
                plain_http: true,
                ..Options::default()
            },
        );
        let r = Reference::parse("oci://127.0.0.1:9/x:1").unwrap();
        let err = c.resolve_image(&r).unwrap_err();
        assert!(err.contains("cannot reach registry 127.0.0.1:9"), "{err}");
        let mut c = Client::new("127.0.0.1:9", Options::default());
        let err = c.push_blob("x", "sha256:00", b"").unwrap_err();
        assert!(err.contains("--plain-http"), "{err}");
    }

    /// A loopback HTTP server answering each request (head only) with
    /// `answer(head)`; it lives as long as the test process.
    fn fake_server(answer: impl Fn(&str) -> String + Send + 'static) -> u16 {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let reply = answer(&String::from_utf8_lossy(&head));
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        port
    }

    fn reply(status: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut r = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r + "\r\n" + body
    }

    #[test]
    fn bearer_challenge_gets_a_token_with_basic_credentials() {
        let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:00","size":1},"layers":[]}"#;
        let port_cell = std::sync::Arc::new(std::sync::OnceLock::<u16>::new());
        let cell = port_cell.clone();
        let port = fake_server(move |head| {
            let port = cell.get().copied().unwrap_or(0);
            let basic = format!(
                "authorization: Basic {}",
                base64::engine::general_purpose::STANDARD.encode("u:p")
            );
            if head.starts_with("GET /token?") {
                assert!(head.contains("service=test"), "{head}");
                assert!(head.contains("scope=repository%3Amg%2Fx%3Apull"), "{head}");
                if head
                    .to_ascii_lowercase()
                    .contains(&basic.to_ascii_lowercase())
                {
                    reply("200 OK", &[], r#"{"token":"T0K"}"#)
                } else {
                    reply("401 Unauthorized", &[], "{}")
                }
            } else if head
                .to_ascii_lowercase()
                .contains("authorization: bearer t0k")
            {
                reply(
                    "200 OK",
                    &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
                    manifest,
                )
            } else {
                let challenge = format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="test",scope="repository:mg/x:pull""#
                );
                reply("401 Unauthorized", &[("www-authenticate", &challenge)], "")
            }
        });
        port_cell.set(port).unwrap();
        let registry = format!("127.0.0.1:{port}");
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let mut c = Client::new(
            &registry,
            Options {
                plain_http: true,
                credentials: Some(creds),
                credentials_source: None,
            },
        );
        let (bytes, ct) = c.get_manifest("mg/x", "1").unwrap();
        assert_eq!(bytes, manifest.as_bytes());
        assert_eq!(ct, MEDIA_OCI_MANIFEST);

        let mut anonymous = Client::new(
            &registry,
            Options {
                plain_http: true,
                ..Options::default()
            },
        );
        let err = anonymous.get_manifest("mg/x", "1").unwrap_err();
        assert!(err.contains("requires authentication"), "{err}");
        let mut wrong = Client::new(
            &registry,
            Options {
                plain_http: true,
                credentials: Some(Credentials {
                    username: "u".into(),
                    password: "bad".into(),
                }),
                credentials_source: None,
            },
        );
        let err = wrong.get_manifest("mg/x", "1").unwrap_err();
        assert!(err.contains("authentication failed"), "{err}");
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
