//! What istio-agent does with an image (`pkg/wasm/imagefetcher.go`,
//! `cache.go`), so `meshguard pull` accepts exactly what a mesh accepts:
//!
//! 1. Docker manifest (`…distribution.manifest.v2+json`): the **last**
//!    layer must be `…rootfs.diff.tar.gzip`; no fallback.
//! 2. Otherwise compat OCI: the **last** layer is `…layer.v1.tar+gzip`.
//! 3. Otherwise the oci artifact: exactly 2 layers, one of them
//!    `…wasm.content.layer.v1+wasm`, read raw.
//!
//! Compat layers must be gzip; the first tar entry whose base name is
//! `plugin.wasm` is the module. The result must start with `\0asm` and fit
//! the size limit. Every refusal says which rule refused.

use std::io::Read;

use super::image::{
    Descriptor, Manifest, MEDIA_DOCKER_LAYER_GZIP, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_LAYER_ZSTD, MEDIA_WASM_LAYER, PLUGIN_FILE,
};

pub const WASM_MAGIC: &[u8] = b"\0asm";

/// istio-agent's default `ISTIO_WASM_MAX_BINARY_SIZE_BYTES`: 256 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 256 * 1024 * 1024;

/// Which of istio-agent's three layouts the image matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    DockerCompat,
    OciCompat,
    OciArtifact,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Self::DockerCompat => "docker image (compat)",
            Self::OciCompat => "OCI image (compat)",
            Self::OciArtifact => "OCI artifact (oci)",
        }
    }
}

/// Compares a WasmPlugin `sha256` with the manifest digest, as
/// istio-agent's cache does for `oci://` urls.
pub fn check_digest(url: &str, actual: &str, expected: &str) -> Result<(), String> {
    let actual_hex = actual.trim_start_matches("sha256:");
    let want = expected.trim_start_matches("sha256:").to_ascii_lowercase();
    if actual_hex != want {
        return Err(format!(
            "module downloaded from {url} has checksum {actual_hex}, which does not match: {want} \
             (for oci:// urls the sha256 is the image manifest digest)"
        ));
    }
    Ok(())
}

/// Extracts the module from `manifest`; `blob` fetches (and verifies) a
/// layer, refusing more than the given number of bytes.
pub fn extract(
    manifest: &Manifest,
    blob: &mut impl FnMut(&Descriptor, u64) -> Result<Vec<u8>, String>,
    max_size: u64,
) -> Result<(Layout, Vec<u8>), String> {
    let (layout, module) = if manifest.media_type == MEDIA_DOCKER_MANIFEST {
        let m = compat_layer(manifest, MEDIA_DOCKER_LAYER_GZIP, blob, max_size).map_err(|e| {
            format!("could not extract the Wasm file from the image as a Docker image: {e}")
        })?;
        (Layout::DockerCompat, m)
    } else {
        match compat_layer(manifest, MEDIA_OCI_LAYER_GZIP, blob, max_size) {
            Ok(m) => (Layout::OciCompat, m),
            Err(compat) => match artifact_layer(manifest, blob, max_size) {
                Ok(m) => (Layout::OciArtifact, m),
                Err(oci) => {
                    return Err(format!(
                        "the image is in no format istio-agent reads: as compat: {compat}; as oci artifact: {oci}"
                    ))
                }
            },
        }
    };
    check_module(&module, max_size)?;
    Ok((layout, module))
}

/// The `\0asm` magic and the size limit, istio-agent's last checks.
pub fn check_module(module: &[u8], max_size: u64) -> Result<(), String> {
    if module.len() as u64 > max_size {
        return Err(format!(
            "the module is {} bytes, over the size limit of {max_size} bytes",
            module.len()
        ));
    }
    if !module.starts_with(WASM_MAGIC) {
        let head: Vec<String> = module.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(format!(
            "the fetched file is not a Wasm module: it starts with [{}], not \\0asm",
            head.join(" ")
        ));
    }
    Ok(())
}

fn compat_layer(
    manifest: &Manifest,
    want: &str,
    blob: &mut impl FnMut(&Descriptor, u64) -> Result<Vec<u8>, String>,
    max_size: u64,
) -> Result<Vec<u8>, String> {
    let layer = manifest
        .layers
        .last()
        .ok_or("the image has no layers (the number of layers must be greater than zero)")?;
    if layer.media_type != want {
        let hint = if layer.media_type == MEDIA_OCI_LAYER_ZSTD {
            " (zstd layers are not supported: istio-agent reads gzip only)"
        } else {
            ""
        };
        return Err(format!(
            "the last layer has media type {}, expected {want}{hint}",
            layer.media_type
        ));
    }
    let bytes = blob(layer, max_size)?;
    plugin_from_layer(&bytes, max_size)
}

/// The first `plugin.wasm` (by base name) in a gzip'd tar layer.
pub fn plugin_from_layer(gz: &[u8], max_size: u64) -> Result<Vec<u8>, String> {
    if gz.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err("the layer is zstd-compressed; istio-agent reads gzip only".into());
    }
    if !gz.starts_with(&[0x1f, 0x8b]) {
        return Err("failed to parse the layer as tar.gz: not gzip data".into());
    }
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let entries = ar
        .entries()
        .map_err(|e| format!("failed to parse the layer as tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("failed to parse the layer as tar.gz: {e}"))?;
        let is_plugin = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n == PLUGIN_FILE))
            .unwrap_or(false);
        if !is_plugin {
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > max_size {
            return Err(format!(
                "{PLUGIN_FILE} is {size} bytes, over the size limit of {max_size} bytes"
            ));
        }
        let mut out = Vec::new();
        entry
            .read_to_end(&mut out)
            .map_err(|e| format!("failed to read {PLUGIN_FILE} from the layer: {e}"))?;
        return Ok(out);
    }
    Err(format!("{PLUGIN_FILE} not found in the layer"))
}

fn artifact_layer(
    manifest: &Manifest,
    blob: &mut impl FnMut(&Descriptor, u64) -> Result<Vec<u8>, String>,
    max_size: u64,
) -> Result<Vec<u8>, String> {
    if manifest.layers.len() != 2 {
        return Err(format!(
            "the number of layers must be 2 but got {}",
            manifest.layers.len()
        ));
    }
    let layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type == MEDIA_WASM_LAYER)
        .ok_or_else(|| format!("no layer has media type {MEDIA_WASM_LAYER}"))?;
    if layer.size > max_size {
        return Err(format!(
            "the Wasm layer is {} bytes, over the size limit of {max_size} bytes",
            layer.size
        ));
    }
    blob(layer, max_size)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::oci::image::{self, build, gzip, Format, MEDIA_OCI_CONFIG, MEDIA_WASM_CONFIG};

    const MODULE: &[u8] = b"\0asm\x01\0\0\0 proxy_abi_version_0_2_1";

    /// Blobs served from memory, checked like the registry client does.
    fn serve(blobs: Vec<Vec<u8>>) -> impl FnMut(&Descriptor, u64) -> Result<Vec<u8>, String> {
        move |d, limit| {
            let b = blobs
                .iter()
                .find(|b| crate::oci::digest_of(b) == d.digest)
                .cloned()
                .ok_or_else(|| format!("blob {} not found", d.digest))?;
            if b.len() as u64 > limit {
                return Err("blob over the size limit".into());
            }
            Ok(b)
        }
    }

    fn desc(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: crate::oci::digest_of(bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }

    fn manifest(media_type: &str, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: media_type.into(),
            config: desc(MEDIA_OCI_CONFIG, b"{}"),
            layers,
            annotations: BTreeMap::new(),
        }
    }

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        gzip(&b.into_inner().unwrap()).unwrap()
    }

    #[test]
    fn reads_both_variants_meshguard_builds() {
        for (f, layout) in [
            (Format::Compat, Layout::OciCompat),
            (Format::Oci, Layout::OciArtifact),
        ] {
            let img = build(MODULE, f, &[]).unwrap();
            let m: Manifest = serde_json::from_slice(&img.manifest).unwrap();
            let blobs = img.blobs().into_iter().map(|b| b.bytes.clone()).collect();
            let (got, module) = extract(&m, &mut serve(blobs), DEFAULT_MAX_SIZE).unwrap();
            assert_eq!((got, module.as_slice()), (layout, MODULE));
        }
    }

    #[test]
    fn docker_manifest_reads_its_last_layer_only() {
        let base = tar_gz(&[("etc/x", b"x")]);
        let top = tar_gz(&[
            ("./README", b"r"),
            ("./plugin.wasm", MODULE),
            ("plugin.wasm", b"second"),
        ]);
        let m = manifest(
            MEDIA_DOCKER_MANIFEST,
            vec![
                desc(MEDIA_DOCKER_LAYER_GZIP, &base),
                desc(MEDIA_DOCKER_LAYER_GZIP, &top),
            ],
        );
        let (layout, module) =
            extract(&m, &mut serve(vec![base.clone(), top]), DEFAULT_MAX_SIZE).unwrap();
        assert_eq!(layout, Layout::DockerCompat);
        assert_eq!(module, MODULE, "the first plugin.wasm, by base name");

        // A Docker manifest never falls back to the OCI layouts.
        let m = manifest(
            MEDIA_DOCKER_MANIFEST,
            vec![desc(MEDIA_OCI_LAYER_GZIP, &base)],
        );
        let err = extract(&m, &mut serve(vec![base]), DEFAULT_MAX_SIZE).unwrap_err();
        assert!(err.contains("as a Docker image"), "{err}");
        assert!(err.contains(MEDIA_DOCKER_LAYER_GZIP), "{err}");
    }

    #[test]
    fn compat_is_tried_before_the_artifact_layout() {
        // Two layers, the last a gzip tar: compat wins, the wasm layer is ignored.
        let gz = tar_gz(&[("plugin.wasm", MODULE)]);
        let other = b"\0asm other".to_vec();
        let m = manifest(
            "",
            vec![
                desc(MEDIA_WASM_LAYER, &other),
                desc(MEDIA_OCI_LAYER_GZIP, &gz),
            ],
        );
        let (layout, module) = extract(&m, &mut serve(vec![gz, other]), DEFAULT_MAX_SIZE).unwrap();
        assert_eq!((layout, module.as_slice()), (Layout::OciCompat, MODULE));
    }

    /// name, manifest, blobs served, size limit, expected error part.
    type Case = (&'static str, Manifest, Vec<Vec<u8>>, u64, &'static str);

    #[test]
    fn refusals_name_their_rule() {
        let gz = tar_gz(&[("plugin.wasm", MODULE)]);
        let cases: Vec<Case> = vec![
            (
                "wrong layer media type",
                manifest("", vec![desc("application/octet-stream", MODULE)]),
                vec![MODULE.to_vec()],
                DEFAULT_MAX_SIZE,
                "the last layer has media type application/octet-stream",
            ),
            (
                "zstd layer",
                manifest("", vec![desc(MEDIA_OCI_LAYER_ZSTD, b"\x28\xb5\x2f\xfd")]),
                vec![b"\x28\xb5\x2f\xfd".to_vec()],
                DEFAULT_MAX_SIZE,
                "zstd layers are not supported",
            ),
            (
                "zstd bytes under a gzip media type",
                manifest("", vec![desc(MEDIA_OCI_LAYER_GZIP, b"\x28\xb5\x2f\xfd")]),
                vec![b"\x28\xb5\x2f\xfd".to_vec()],
                DEFAULT_MAX_SIZE,
                "zstd-compressed; istio-agent reads gzip only",
            ),
            (
                "no plugin.wasm",
                manifest(
                    "",
                    vec![desc(
                        MEDIA_OCI_LAYER_GZIP,
                        &tar_gz(&[("filter.wasm", MODULE)]),
                    )],
                ),
                vec![tar_gz(&[("filter.wasm", MODULE)])],
                DEFAULT_MAX_SIZE,
                "plugin.wasm not found in the layer",
            ),
            (
                "not wasm",
                manifest(
                    "",
                    vec![desc(
                        MEDIA_OCI_LAYER_GZIP,
                        &tar_gz(&[("plugin.wasm", b"hello")]),
                    )],
                ),
                vec![tar_gz(&[("plugin.wasm", b"hello")])],
                DEFAULT_MAX_SIZE,
                "not a Wasm module: it starts with [68 65 6c 6c]",
            ),
            (
                "over-size compat module",
                manifest("", vec![desc(MEDIA_OCI_LAYER_GZIP, &gz)]),
                vec![gz.clone()],
                MODULE.len() as u64 - 1,
                "over the size limit",
            ),
            (
                "over-size raw module",
                manifest(
                    "",
                    vec![
                        desc(MEDIA_WASM_CONFIG, b"{}"),
                        desc(MEDIA_WASM_LAYER, MODULE),
                    ],
                ),
                vec![b"{}".to_vec(), MODULE.to_vec()],
                4,
                "the Wasm layer is 32 bytes, over the size limit of 4 bytes",
            ),
            (
                "three artifact layers",
                manifest(
                    "",
                    vec![
                        desc(MEDIA_WASM_CONFIG, b"{}"),
                        desc(MEDIA_WASM_LAYER, MODULE),
                        desc(MEDIA_WASM_LAYER, MODULE),
                    ],
                ),
                vec![b"{}".to_vec(), MODULE.to_vec()],
                DEFAULT_MAX_SIZE,
                "the number of layers must be 2 but got 3",
            ),
            (
                "no layers",
                manifest("", vec![]),
                vec![],
                DEFAULT_MAX_SIZE,
                "has no layers",
            ),
        ];
        for (name, m, blobs, max, want) in cases {
            let err = extract(&m, &mut serve(blobs), max).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn digest_check_is_against_the_manifest() {
        let img = image::build(MODULE, Format::Compat, &[]).unwrap();
        let d = img.digest();
        check_digest("oci://r/x:1", &d, d.trim_start_matches("sha256:")).unwrap();
        check_digest("oci://r/x:1", &d, &d).unwrap();
        let module_hash = crate::oci::sha256_hex(MODULE);
        let err = check_digest("oci://r/x:1", &d, &module_hash).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        assert!(err.contains("manifest digest"), "{err}");
    }
}
