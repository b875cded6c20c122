//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/`):
//! written with canonical JSON so the digests depend only on the content, and
//! read back (with every blob checked against its digest) for `push`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageConfiguration, ImageIndex, ImageIndexBuilder,
    ImageManifest, ImageManifestBuilder, MediaType, OciLayoutBuilder,
};
use serde::Serialize;

use super::ImageError;
use super::layer::{Layer, sha256_digest};

/// A single-layer image ready to be written: its config (whose
/// `rootfs.diff_ids` must already name the layer) and manifest annotations.
pub struct SingleLayerImage {
    pub config: ImageConfiguration,
    pub layer: Layer,
    pub annotations: BTreeMap<String, String>,
}

/// What was written: the manifest's digest (what a registry reports and what
/// a pin by digest uses) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub manifest_digest: String,
    pub manifest_size: u64,
}

/// Serializes with object keys sorted at every level. oci-spec keeps
/// annotations, labels and exposed ports in `HashMap`s, whose iteration order
/// changes from run to run; sorting makes equal content give equal bytes.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    let mut value = serde_json::to_value(value).map_err(ImageError::Json)?;
    value.sort_all_objects();
    serde_json::to_vec(&value).map_err(ImageError::Json)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn spec_error(err: oci_spec::OciSpecError) -> ImageError {
    ImageError::Spec(err.to_string())
}

fn digest(value: &str) -> Result<Digest, ImageError> {
    Digest::try_from(value).map_err(spec_error)
}

/// Writes `image` as an OCI layout at `dir`, tagged `tag`, replacing whatever
/// was there. The layout is built beside `dir` and moved into place, so a
/// failed build never leaves a half-written layout behind.
pub fn write(dir: &Path, tag: &str, image: &SingleLayerImage) -> Result<Written, ImageError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".to_string());
    let staging = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    let written = write_into(&staging, tag, image);
    let written = match written {
        Ok(written) => written,
        Err(err) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io_error(dir))?;
    }
    fs::rename(&staging, dir).map_err(io_error(dir))?;
    Ok(written)
}

fn write_into(dir: &Path, tag: &str, image: &SingleLayerImage) -> Result<Written, ImageError> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(io_error(&blobs))?;
    let put_blob = |bytes: &[u8]| -> Result<(String, u64), ImageError> {
        let digest = sha256_digest(bytes);
        let path = blobs.join(digest.trim_start_matches("sha256:"));
        fs::write(&path, bytes).map_err(io_error(&path))?;
        Ok((digest, bytes.len() as u64))
    };

    let config_json = canonical_json(&image.config)?;
    let (config_digest, config_size) = put_blob(&config_json)?;
    let (layer_digest, layer_size) = put_blob(&image.layer.blob)?;

    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            digest(&config_digest)?,
        ))
        .layers(vec![Descriptor::new(
            MediaType::ImageLayerGzip,
            layer_size,
            digest(&layer_digest)?,
        )])
        .build()
        .map_err(spec_error)?;
    if !image.annotations.is_empty() {
        manifest.set_annotations(Some(image.annotations.clone().into_iter().collect()));
    }
    let manifest_json = canonical_json(&manifest)?;
    let (manifest_digest, manifest_size) = put_blob(&manifest_json)?;

    let mut entry = Descriptor::new(
        MediaType::ImageManifest,
        manifest_size,
        digest(&manifest_digest)?,
    );
    entry.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_string(),
        tag.to_string(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![entry])
        .build()
        .map_err(spec_error)?;
    let index_path = dir.join("index.json");
    fs::write(&index_path, canonical_json(&index)?).map_err(io_error(&index_path))?;

    let marker = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(spec_error)?;
    let marker_path = dir.join("oci-layout");
    fs::write(&marker_path, canonical_json(&marker)?).map_err(io_error(&marker_path))?;

    Ok(Written {
        manifest_digest,
        manifest_size,
    })
}

/// An OCI layout on disk, opened for reading.
pub struct Layout {
    dir: PathBuf,
    index: ImageIndex,
}

impl Layout {
    pub fn open(dir: &Path) -> Result<Layout, ImageError> {
        if !dir.join("oci-layout").is_file() {
            return Err(ImageError::NotALayout {
                path: dir.to_path_buf(),
            });
        }
        let index_path = dir.join("index.json");
        let bytes = fs::read(&index_path).map_err(io_error(&index_path))?;
        let index = ImageIndex::from_reader(bytes.as_slice()).map_err(spec_error)?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            index,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest tagged `tag`, with its descriptor (digest, size).
    pub fn manifest(&self, tag: &str) -> Result<(Descriptor, ImageManifest), ImageError> {
        let descriptor = self
            .index
            .manifests()
            .iter()
            .find(|entry| {
                entry
                    .annotations()
                    .as_ref()
                    .and_then(|annotations| annotations.get(ANNOTATION_REF_NAME))
                    .is_some_and(|name| name == tag)
            })
            .cloned()
            .ok_or_else(|| ImageError::TagNotFound {
                path: self.dir.clone(),
                tag: tag.to_string(),
            })?;
        let bytes = self.blob(descriptor.digest())?;
        let manifest = ImageManifest::from_reader(bytes.as_slice()).map_err(spec_error)?;
        Ok((descriptor, manifest))
    }

    /// The blob named `digest`, checked against it.
    pub fn blob(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let path = self
            .dir
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest());
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        let actual = sha256_digest(&bytes);
        if actual != digest.to_string() {
            return Err(ImageError::DigestMismatch {
                path,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::image::{Arch, ImageConfigurationBuilder, Os, RootFsBuilder};

    use super::*;
    use crate::image::layer::{self, Entry};

    fn image(contents: &[u8]) -> SingleLayerImage {
        let layer =
            layer::build(vec![Entry::file("a.txt", 0o644, contents.to_vec())]).expect("layer");
        let config = ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![layer.diff_id.clone()])
                    .build()
                    .expect("rootfs"),
            )
            .build()
            .expect("config");
        SingleLayerImage {
            config,
            layer,
            annotations: BTreeMap::from([
                ("z.last".to_string(), "1".to_string()),
                ("a.first".to_string(), "2".to_string()),
                ("m.middle".to_string(), "3".to_string()),
            ]),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": {"y": 1, "x": 2}, "a": [{"d": 1, "c": 2}]});
        let bytes = canonical_json(&value).expect("json");
        assert_eq!(
            String::from_utf8(bytes).expect("utf8"),
            r#"{"a":[{"c":2,"d":1}],"b":{"x":2,"y":1}}"#
        );
    }

    #[test]
    fn writing_twice_gives_identical_layouts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = write(&tmp.path().join("one"), "1.0", &image(b"hi")).expect("write");
        let second = write(&tmp.path().join("two"), "1.0", &image(b"hi")).expect("write");
        assert_eq!(first, second);
        for file in ["index.json", "oci-layout"] {
            assert_eq!(
                fs::read(tmp.path().join("one").join(file)).expect("read"),
                fs::read(tmp.path().join("two").join(file)).expect("read"),
                "{file}"
            );
        }
        let third = write(&tmp.path().join("three"), "1.0", &image(b"ho")).expect("write");
        assert_ne!(first.manifest_digest, third.manifest_digest);
    }

    #[test]
    fn layout_reads_back_and_verifies_blobs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("img");
        let written = write(&dir, "v9", &image(b"hello")).expect("write");
        let layout = Layout::open(&dir).expect("open");
        let (descriptor, manifest) = layout.manifest("v9").expect("manifest");
        assert_eq!(descriptor.digest().to_string(), written.manifest_digest);
        assert_eq!(descriptor.size(), written.manifest_size);
        assert_eq!(manifest.media_type(), &Some(MediaType::ImageManifest));
        assert_eq!(manifest.layers().len(), 1);
        assert_eq!(
            manifest.layers()[0].media_type(),
            &MediaType::ImageLayerGzip
        );
        let annotations = manifest.annotations().as_ref().expect("annotations");
        assert_eq!(annotations.get("a.first").map(String::as_str), Some("2"));

        assert!(matches!(
            layout.manifest("other"),
            Err(ImageError::TagNotFound { .. })
        ));

        // A blob altered on disk no longer matches its name.
        let layer_digest = manifest.layers()[0].digest().clone();
        let path = dir.join("blobs/sha256").join(layer_digest.digest());
        fs::write(&path, b"tampered").expect("tamper");
        assert!(matches!(
            layout.blob(&layer_digest),
            Err(ImageError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn rewriting_replaces_the_old_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("img");
        write(&dir, "t", &image(b"old")).expect("write");
        write(&dir, "t", &image(b"new")).expect("write");
        let blobs = fs::read_dir(dir.join("blobs/sha256"))
            .expect("blobs")
            .count();
        assert_eq!(blobs, 3, "config, layer, manifest: no stale blobs");
        let leftovers: Vec<_> = fs::read_dir(tmp.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("img")]);
    }

    #[test]
    fn a_directory_without_oci_layout_is_rejected() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Layout::open(tmp.path()),
            Err(ImageError::NotALayout { .. })
        ));
    }
}
