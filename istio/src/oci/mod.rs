//! Filters as OCI images, the way Istio ships and fetches them.
//!
//! - [`image`]: builds the two image variants Istio reads (solo-io/wasm
//!   `compat` and `oci`), byte-for-byte reproducible.
//! - [`registry`]: a small blocking client for the distribution API (the
//!   few calls push and pull need, with basic/bearer auth).
//! - [`fetch`]: what istio-agent does with a pulled manifest: the same
//!   layout detection in the same order and the same refusals.
//! - [`reference`], [`auth`]: `oci://` references and Docker config
//!   credentials.
//!
//! [`push`] and [`pull`] tie them together for the CLI.
//!
//! Registry answers and image bytes are hostile input: no panic paths
//! here (clippy denies them outside tests, as in the filter crates).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod auth;
pub mod fetch;
pub mod image;
pub mod reference;
pub mod registry;

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

pub use fetch::{Layout, DEFAULT_MAX_SIZE};
pub use image::Format;
pub use reference::Reference;
pub use registry::{Client, Credentials, Options};

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `sha256:<hex>`: an OCI content digest.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// What `meshguard push` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub reference: Reference,
    pub format: Format,
    /// `sha256:…` of the manifest: a WasmPlugin's `sha256` (without the
    /// prefix) for an `oci://` url.
    pub manifest_digest: String,
    /// sha256 of the module itself (what an `http(s)://` url is checked
    /// against, and Envoy's `code.remote.sha256` for the raw oci layer).
    pub module_sha256: String,
    /// The layer blob that holds the module, e.g. for Envoy's `code.remote`.
    pub module_layer_digest: String,
}

impl Pushed {
    pub fn summary(&self) -> String {
        format!(
            "pushed {} ({})\nmanifest digest: {}\nmodule sha256:   {}\nWasmPlugin: url: {}  sha256: {}\n",
            self.reference.oci_url(),
            self.format.name(),
            self.manifest_digest,
            self.module_sha256,
            self.reference.oci_url(),
            self.manifest_digest.trim_start_matches("sha256:"),
        )
    }
}

/// Builds the image for `module` and pushes it to `reference`.
pub fn push(
    module: &[u8],
    reference: &Reference,
    format: Format,
    root_ids: &[String],
    client: &mut Client,
) -> Result<Pushed, String> {
    if !module.starts_with(fetch::WASM_MAGIC) {
        return Err("not a Wasm module (it does not start with \\0asm); refusing to push".into());
    }
    let img = image::build(module, format, root_ids)?;
    for blob in img.blobs() {
        client.push_blob(&reference.repository, &blob.digest(), &blob.bytes)?;
    }
    let tag = reference.tag_or_digest();
    let manifest_digest = client.push_manifest(
        &reference.repository,
        &tag,
        image::MEDIA_OCI_MANIFEST,
        &img.manifest,
    )?;
    Ok(Pushed {
        reference: reference.clone(),
        format,
        manifest_digest,
        module_sha256: sha256_hex(module),
        module_layer_digest: img.module_layer_digest(),
    })
}

/// What `meshguard pull` got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub module: Vec<u8>,
    pub layout: Layout,
    pub manifest_digest: String,
    pub module_sha256: String,
}

/// Fetches `reference` and extracts the module as istio-agent does;
/// `expected_sha256` is a WasmPlugin's `sha256` (the manifest digest).
pub fn pull(
    reference: &Reference,
    expected_sha256: Option<&str>,
    max_size: u64,
    client: &mut Client,
) -> Result<Pulled, String> {
    let (manifest, digest) = client.resolve_image(reference)?;
    if let Some(want) = expected_sha256 {
        fetch::check_digest(&reference.oci_url(), &digest, want)?;
    }
    let repo = reference.repository.clone();
    let mut blobs = |d: &image::Descriptor, limit: u64| client.pull_blob(&repo, d, limit);
    let (layout, module) = fetch::extract(&manifest, &mut blobs, max_size)?;
    Ok(Pulled {
        module_sha256: sha256_hex(&module),
        module,
        layout,
        manifest_digest: digest,
    })
}

/// One entry of the lock file `make push` writes (`dist/images.lock.json`):
/// what a pushed filter is, so WasmPlugins can pin it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// `oci://host/repo:tag`, the WasmPlugin `url`.
    pub reference: String,
    pub format: String,
    /// `sha256:…`; the WasmPlugin `sha256` is its hex part.
    pub manifest_digest: String,
    pub module_sha256: String,
}

/// Records `pushed` as `filter` in the lock file at `path` (created if
/// missing; other filters' entries kept).
pub fn update_lock(path: &Path, filter: &str, pushed: &Pushed) -> Result<(), String> {
    let mut lock: BTreeMap<String, LockEntry> = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a meshguard lock file: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    lock.insert(
        filter.to_string(),
        LockEntry {
            reference: pushed.reference.oci_url(),
            format: pushed.format.name().to_string(),
            manifest_digest: pushed.manifest_digest.clone(),
            module_sha256: pushed.module_sha256.clone(),
        },
    );
    let mut text = serde_json::to_string_pretty(&lock).map_err(|e| e.to_string())?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_keeps_other_filters() {
        let dir = std::env::temp_dir().join(format!("mg-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("images.lock.json");
        let _ = std::fs::remove_file(&path);
        let p = |name: &str| Pushed {
            reference: Reference::parse(&format!("oci://r.example/mg/{name}:1")).unwrap(),
            format: Format::Compat,
            manifest_digest: format!("sha256:{}", "a".repeat(64)),
            module_sha256: "b".repeat(64),
            module_layer_digest: format!("sha256:{}", "c".repeat(64)),
        };
        update_lock(&path, "ab-routing", &p("ab-routing")).unwrap();
        update_lock(&path, "authn", &p("authn")).unwrap();
        let lock: BTreeMap<String, LockEntry> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(lock.len(), 2);
        assert_eq!(lock["authn"].reference, "oci://r.example/mg/authn:1");
        assert_eq!(lock["ab-routing"].format, "compat");
        std::fs::write(&path, "[]").unwrap();
        assert!(update_lock(&path, "x", &p("x"))
            .unwrap_err()
            .contains("not a meshguard lock file"));
    }

    #[test]
    fn pushing_a_non_wasm_file_is_refused_before_any_request() {
        let mut client = Client::new("127.0.0.1:9", Options::default());
        let r = Reference::parse("oci://127.0.0.1:9/x:1").unwrap();
        let err = push(b"hello", &r, Format::Compat, &[], &mut client).unwrap_err();
        assert!(err.contains("not a Wasm module"), "{err}");
    }
}
