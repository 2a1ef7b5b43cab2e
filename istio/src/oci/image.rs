//! The two Wasm image variants Istio reads (solo-io/wasm spec), built
//! reproducibly: the same module always gives the same manifest digest, so
//! a WasmPlugin's `sha256` can be computed, reviewed and pinned.
//!
//! - `compat`: one `tar+gzip` layer with `plugin.wasm`, a real OCI image
//!   config, annotation `module.wasm.image/variant: compat`. Works with
//!   every registry and with docker/buildah tooling.
//! - `oci`: config `application/vnd.module.wasm.config.v1+json` and the raw
//!   module as `application/vnd.module.wasm.content.layer.v1+wasm`. istio-agent
//!   wants *exactly two* layers in this variant (`extractOCIArtifactImage`),
//!   as solo-io's `wasme` built them: so the runtime config is also the first
//!   layer and the module the second.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::digest_of;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
pub const MEDIA_WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

pub const ANNOTATION_VARIANT: &str = "module.wasm.image/variant";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// The file name istio-agent looks for in a compat layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Compat,
    Oci,
}

impl Format {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "compat" => Ok(Self::Compat),
            "oci" => Ok(Self::Oci),
            other => Err(format!("unknown format `{other}`; expected compat or oci")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Compat => "compat",
            Self::Oci => "oci",
        }
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Only in index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

/// An image manifest (OCI or Docker schema 2; unknown fields ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Set explicitly on push: some registries require it, and istio-agent
    /// tells Docker from OCI manifests by it.
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index / manifest list (only read, on pull).
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A blob with the media type it is referenced under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn digest(&self) -> String {
        digest_of(&self.bytes)
    }

    fn descriptor(&self, title: Option<&str>) -> Descriptor {
        let mut annotations = BTreeMap::new();
        if let Some(t) = title {
            annotations.insert(ANNOTATION_TITLE.to_string(), t.to_string());
        }
        Descriptor {
            media_type: self.media_type.to_string(),
            digest: self.digest(),
            size: self.bytes.len() as u64,
            annotations,
            platform: None,
        }
    }
}

/// A built image: its blobs and the manifest bytes that name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub format: Format,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Vec<u8>,
}

impl Image {
    /// `sha256:…` of the manifest bytes.
    pub fn digest(&self) -> String {
        digest_of(&self.manifest)
    }

    /// Config and layers, each once (the oci variant's config is also a layer).
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut out: Vec<&Blob> = vec![&self.config];
        for l in &self.layers {
            if !out.iter().any(|b| b.bytes == l.bytes) {
                out.push(l);
            }
        }
        out
    }

    /// The layer that carries the module (the last one in both variants).
    pub fn module_layer_digest(&self) -> String {
        self.layers.last().map(Blob::digest).unwrap_or_default()
    }
}

/// Builds `format`'s image for `module`. `root_ids` go into the oci
/// variant's runtime config (informational; Istio reads neither it nor the
/// ABI versions).
pub fn build(module: &[u8], format: Format, root_ids: &[String]) -> Result<Image, String> {
    match format {
        Format::Compat => compat(module),
        Format::Oci => oci(module, root_ids),
    }
}

fn compat(module: &[u8]) -> Result<Image, String> {
    let tar = plugin_tar(module)?;
    let layer = Blob {
        media_type: MEDIA_OCI_LAYER_GZIP,
        bytes: gzip(&tar)?,
    };
    // A minimal valid OCI image config: platform, and the rootfs diff_id
    // (digest of the uncompressed tar). No timestamps: reproducible.
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&tar)]},
    });
    let config = Blob {
        media_type: MEDIA_OCI_CONFIG,
        bytes: serde_json::to_vec(&config).map_err(|e| e.to_string())?,
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_OCI_MANIFEST.to_string(),
        config: config.descriptor(None),
        layers: vec![layer.descriptor(None)],
        annotations: BTreeMap::from([(ANNOTATION_VARIANT.to_string(), "compat".to_string())]),
    };
    Ok(Image {
        format: Format::Compat,
        manifest: serde_json::to_vec(&manifest).map_err(|e| e.to_string())?,
        config,
        layers: vec![layer],
    })
}

fn oci(module: &[u8], root_ids: &[String]) -> Result<Image, String> {
    let runtime = serde_json::json!({
        "type": "envoy_proxy",
        "abiVersions": abi_versions(module),
        "config": {"rootIds": root_ids},
    });
    let config = Blob {
        media_type: MEDIA_WASM_CONFIG,
        bytes: serde_json::to_vec(&runtime).map_err(|e| e.to_string())?,
    };
    let wasm = Blob {
        media_type: MEDIA_WASM_LAYER,
        bytes: module.to_vec(),
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_OCI_MANIFEST.to_string(),
        config: config.descriptor(None),
        layers: vec![
            config.descriptor(Some("runtime-config.json")),
            wasm.descriptor(Some(PLUGIN_FILE)),
        ],
        annotations: BTreeMap::new(),
    };
    Ok(Image {
        format: Format::Oci,
        manifest: serde_json::to_vec(&manifest).map_err(|e| e.to_string())?,
        layers: vec![config.clone(), wasm],
        config,
    })
}

/// The proxy-wasm ABI versions a module exports (`proxy_abi_version_0_2_1`),
/// read from its export names.
pub fn abi_versions(module: &[u8]) -> Vec<String> {
    const PREFIX: &[u8] = b"proxy_abi_version_";
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = module
        .get(i..)
        .and_then(|rest| rest.windows(PREFIX.len()).position(|w| w == PREFIX))
    {
        let start = i + pos;
        let end = module
            .get(start + PREFIX.len()..)
            .map(|rest| {
                start
                    + PREFIX.len()
                    + rest
                        .iter()
                        .take_while(|b| b.is_ascii_digit() || **b == b'_')
                        .count()
            })
            .unwrap_or(start);
        if let Some(name) = module
            .get(start..end)
            .and_then(|b| std::str::from_utf8(b).ok())
        {
            if name.len() > PREFIX.len() && !out.iter().any(|n: &String| n == name) {
                out.push(name.to_string());
            }
        }
        i = end.max(start + 1);
    }
    out
}

/// A tar with one entry, `plugin.wasm`: ustar, mode 0644, owner 0:0,
/// mtime 0, no user/group names, so its bytes depend on the module only.
pub fn plugin_tar(module: &[u8]) -> Result<Vec<u8>, String> {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(PLUGIN_FILE)
        .map_err(|e| format!("tar: {e}"))?;
    header.set_size(module.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&header, module).map_err(|e| format!("tar: {e}"))?;
    b.into_inner().map_err(|e| format!("tar: {e}"))
}

/// gzip without a file name and with mtime 0 (RFC 1952 allows both), so
/// the same input always compresses to the same bytes.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data).map_err(|e| format!("gzip: {e}"))?;
    enc.finish().map_err(|e| format!("gzip: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MODULE: &[u8] =
        b"\0asm\x01\0\0\0 export proxy_abi_version_0_2_1 proxy_on_vm_start";

    #[test]
    fn same_module_same_digest_both_formats() {
        for f in [Format::Compat, Format::Oci] {
            let a = build(MODULE, f, &["ab_routing".into()]).unwrap();
            let b = build(MODULE, f, &["ab_routing".into()]).unwrap();
            assert_eq!(a, b, "{f:?}");
            let mut other = MODULE.to_vec();
            other.push(0);
            assert_ne!(build(&other, f, &[]).unwrap().digest(), a.digest());
        }
    }

    /// Digests pinned in WasmPlugins must not move when meshguard is
    /// rebuilt: a change here is a deliberate format change (or a new
    /// deflate), to be called out in the release notes.
    #[test]
    fn digests_are_stable_across_builds() {
        let compat = build(MODULE, Format::Compat, &[]).unwrap().digest();
        let oci = build(MODULE, Format::Oci, &["ab_routing".into()])
            .unwrap()
            .digest();
        assert_eq!(
            (compat.as_str(), oci.as_str()),
            (
                "sha256:8863e6b7b879111a758e380e7e58780c1b3e697ca4a0aaa716886046aa463ec6",
                "sha256:c52a438fc0acc001539c8a1dc876f3cd56f3c82fed0912e395df2e998f418ffa"
            )
        );
    }

    #[test]
    fn compat_layer_is_fixed_tar_in_plain_gzip() {
        let img = build(MODULE, Format::Compat, &[]).unwrap();
        let m: Manifest = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(m.media_type, MEDIA_OCI_MANIFEST);
        assert_eq!(m.config.media_type, MEDIA_OCI_CONFIG);
        assert_eq!(m.annotations[ANNOTATION_VARIANT], "compat");
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].media_type, MEDIA_OCI_LAYER_GZIP);
        let gz = &img.layers[0].bytes;
        // gzip header: magic, deflate, no FNAME flag, mtime 0.
        assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0]);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let entries: Vec<_> = ar.entries().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(entries.len(), 1);
        let h = entries[0].header();
        assert_eq!(h.path().unwrap().to_str(), Some("plugin.wasm"));
        assert_eq!(
            (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0o644, 0, 0)
        );
        assert_eq!(h.mtime().unwrap(), 0);
        let cfg: serde_json::Value = serde_json::from_slice(&img.config.bytes).unwrap();
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0],
            digest_of(&plugin_tar(MODULE).unwrap())
        );
        assert_eq!(m.config.digest, img.config.digest());
        assert_eq!(img.blobs().len(), 2);
    }

    #[test]
    fn oci_variant_has_the_two_layers_istio_wants() {
        let img = build(MODULE, Format::Oci, &["ab_routing".into()]).unwrap();
        let m: Manifest = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(m.media_type, MEDIA_OCI_MANIFEST);
        assert_eq!(m.config.media_type, MEDIA_WASM_CONFIG);
        let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(types, [MEDIA_WASM_CONFIG, MEDIA_WASM_LAYER]);
        assert_eq!(m.layers[1].digest, digest_of(MODULE));
        assert_eq!(img.module_layer_digest(), digest_of(MODULE));
        let cfg: serde_json::Value = serde_json::from_slice(&img.config.bytes).unwrap();
        assert_eq!(cfg["type"], "envoy_proxy");
        assert_eq!(cfg["abiVersions"][0], "proxy_abi_version_0_2_1");
        assert_eq!(cfg["config"]["rootIds"][0], "ab_routing");
        // Config and first layer are one blob: uploaded once.
        assert_eq!(img.blobs().len(), 2);
    }

    #[test]
    fn format_names() {
        assert_eq!(Format::parse("oci").unwrap(), Format::Oci);
        assert!(Format::parse("docker")
            .unwrap_err()
            .contains("compat or oci"));
    }
}
