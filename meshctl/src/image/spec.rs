//! What goes into each image. `filter/Dockerfile`, `model-service/Dockerfile`
//! and `meshctl/Dockerfile` build the same files, user, entrypoint and port;
//! keep them in step with the constants here.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use model_service::config::env as service_env;
use oci_spec::image::{Arch, ConfigBuilder, ImageConfigurationBuilder, Os, RootFsBuilder};

use super::ImageError;
use super::layer::{self, Entry};
use super::layout::SingleLayerImage;

/// Name of the module inside the filter image: Istio's fetcher looks for a
/// file with this base name in the last layer (the "compat" variant).
pub const FILTER_FILE: &str = "plugin.wasm";
/// The Wasm image spec asks OCI-typed compat images to say so in the manifest.
pub const WASM_VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
pub const WASM_VARIANT: &str = "compat";

/// Where things live in the model-service image (a `scratch` image: nothing
/// else is in it).
pub const MODEL_SERVICE_BINARY: &str = "model-service";
pub const MODELS_DIR: &str = "models";
/// distroless's `nonroot` user; numeric so it needs no `/etc/passwd`.
pub const MODEL_SERVICE_USER: &str = "65532:65532";
pub const MODEL_SERVICE_PORT: u16 = model_service::config::DEFAULT_PORT;
/// meshctl's image runs the gate (`meshctl gate serve`, the chart's
/// `gate.*`): the binary at `/meshctl`, the same user.
pub const MESHCTL_BINARY: &str = "meshctl";
pub const MESHCTL_PORT: u16 = crate::gate::PORT;

const WASM_MAGIC: &[u8] = b"\0asm";
const ELF_MAGIC: &[u8] = b"\x7fELF";

/// The filter image: one tar+gzip layer (`application/vnd.oci.image.layer.v1.tar+gzip`)
/// holding `plugin.wasm`, the layout Istio's image fetcher reads as the
/// "compat" variant. Chosen over the `application/vnd.module.wasm.content.layer.v1+wasm`
/// artifact because `FROM scratch` + `COPY plugin.wasm` in Docker gives the same shape.
pub fn filter(wasm_path: &Path) -> Result<SingleLayerImage, ImageError> {
    let wasm = read_input(wasm_path, "filter Wasm module", "run `make wasm`")?;
    // Istio rejects anything shorter than the 8-byte header or without the magic.
    if wasm.len() < 8 || !wasm.starts_with(WASM_MAGIC) {
        return Err(ImageError::NotWasm {
            path: wasm_path.to_path_buf(),
        });
    }
    let layer = layer::build(vec![Entry::file(FILTER_FILE, 0o644, wasm)])?;
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Wasm)
        .os(Os::Other("wasip1".to_string()))
        .rootfs(rootfs(&layer.diff_id)?)
        .build()
        .map_err(spec_error)?;
    Ok(SingleLayerImage {
        config,
        layer,
        annotations: BTreeMap::from([(
            WASM_VARIANT_ANNOTATION.to_string(),
            WASM_VARIANT.to_string(),
        )]),
    })
}

/// The model-service image: the static binary at `/model-service` and the
/// trained models under `/models`, in one layer; runs as 65532:65532.
pub fn model_service(
    binary_path: &Path,
    models_dir: &Path,
) -> Result<SingleLayerImage, ImageError> {
    let binary = read_input(
        binary_path,
        "model-service binary",
        "run `make images` (it builds the musl binary)",
    )?;
    check_static_elf(binary_path, &binary)?;
    if !models_dir.is_dir() {
        return Err(ImageError::MissingInput {
            what: "model-service models directory",
            path: models_dir.to_path_buf(),
            hint: "train or check out the models first",
        });
    }
    let mut entries = vec![
        Entry::file(MODEL_SERVICE_BINARY, 0o755, binary),
        Entry::dir(MODELS_DIR),
    ];
    let before = entries.len();
    collect_tree(models_dir, MODELS_DIR, &mut entries)?;
    if !entries[before..]
        .iter()
        .any(|entry| matches!(entry.kind, layer::EntryKind::File(_)))
    {
        return Err(ImageError::EmptyModels {
            path: models_dir.to_path_buf(),
        });
    }
    let layer = layer::build(entries)?;
    let process = ConfigBuilder::default()
        .user(MODEL_SERVICE_USER)
        .entrypoint(vec![format!("/{MODEL_SERVICE_BINARY}")])
        .env(vec![format!("{}=/{MODELS_DIR}", service_env::MODELS_DIR)])
        .exposed_ports(vec![format!("{MODEL_SERVICE_PORT}/tcp")])
        .build()
        .map_err(spec_error)?;
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(process)
        .rootfs(rootfs(&layer.diff_id)?)
        .build()
        .map_err(spec_error)?;
    Ok(SingleLayerImage {
        config,
        layer,
        annotations: BTreeMap::new(),
    })
}

/// meshctl's image: the static binary at `/meshctl`, nothing else; runs as
/// 65532:65532 and exposes the gate's port. The chart passes `gate serve`
/// and its flags as the container's arguments.
pub fn meshctl(binary_path: &Path) -> Result<SingleLayerImage, ImageError> {
    let binary = read_input(
        binary_path,
        "meshctl binary",
        "run `make images` (it builds the musl binary)",
    )?;
    check_static_elf(binary_path, &binary)?;
    let layer = layer::build(vec![Entry::file(MESHCTL_BINARY, 0o755, binary)])?;
    let process = ConfigBuilder::default()
        .user(MODEL_SERVICE_USER)
        .entrypoint(vec![format!("/{MESHCTL_BINARY}")])
        .exposed_ports(vec![format!("{MESHCTL_PORT}/tcp")])
        .build()
        .map_err(spec_error)?;
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(process)
        .rootfs(rootfs(&layer.diff_id)?)
        .build()
        .map_err(spec_error)?;
    Ok(SingleLayerImage {
        config,
        layer,
        annotations: BTreeMap::new(),
    })
}

fn rootfs(diff_id: &str) -> Result<oci_spec::image::RootFs, ImageError> {
    RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![diff_id.to_string()])
        .build()
        .map_err(spec_error)
}

fn spec_error(err: oci_spec::OciSpecError) -> ImageError {
    ImageError::Spec(err.to_string())
}

fn read_input(path: &Path, what: &'static str, hint: &'static str) -> Result<Vec<u8>, ImageError> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(ImageError::MissingInput {
            what,
            path: path.to_path_buf(),
            hint,
        }),
        Err(source) => Err(ImageError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A `scratch` image has no dynamic loader: refuse an ELF that asks for one
/// (a `PT_INTERP` program header), since it would only fail at start-up.
fn check_static_elf(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let not_static = |reason: &str| ImageError::NotStatic {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if !bytes.starts_with(ELF_MAGIC) {
        return Err(not_static("not an ELF executable"));
    }
    // Only 64-bit little-endian ELF (the x86_64 musl target) is expected.
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(not_static("not a 64-bit little-endian ELF"));
    }
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    let truncated = || not_static("truncated ELF header");
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(truncated)?).map_err(|_| truncated())?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(truncated)?);
    const PT_INTERP: u32 = 3;
    for index in 0..phnum {
        let at = phoff + index * phentsize;
        let kind = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(truncated)?;
        if kind == PT_INTERP {
            return Err(not_static(
                "dynamically linked (build for x86_64-unknown-linux-musl)",
            ));
        }
    }
    Ok(())
}

/// Adds `dir`'s contents under `prefix`, recursively. Symlinks are followed
/// (the image holds the bytes); anything that is neither a file nor a
/// directory is refused rather than silently left out.
fn collect_tree(dir: &Path, prefix: &str, entries: &mut Vec<Entry>) -> Result<(), ImageError> {
    let io = |source| ImageError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    children.sort_by_key(|child| child.file_name());
    for child in children {
        let path = child.path();
        let name = child.file_name();
        let name = name.to_str().ok_or_else(|| ImageError::UnsupportedEntry {
            path: path.clone(),
            reason: "file name is not UTF-8",
        })?;
        let inner = format!("{prefix}/{name}");
        let metadata = fs::metadata(&path).map_err(|source| ImageError::Io {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            entries.push(Entry::dir(inner.clone()));
            collect_tree(&path, &inner, entries)?;
        } else if metadata.is_file() {
            let contents = fs::read(&path).map_err(|source| ImageError::Io {
                path: path.clone(),
                source,
            })?;
            entries.push(Entry::file(inner, 0o644, contents));
        } else {
            return Err(ImageError::UnsupportedEntry {
                path,
                reason: "neither a regular file nor a directory",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with one program header of type `kind`.
    fn elf_with_program_header(kind: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 64 + 56];
        bytes[..4].copy_from_slice(ELF_MAGIC);
        bytes[4] = 2; // ELFCLASS64
        bytes[5] = 1; // little-endian
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        bytes[64..68].copy_from_slice(&kind.to_le_bytes());
        bytes
    }

    #[test]
    fn static_elf_passes_and_dynamic_elf_is_refused() {
        let path = Path::new("bin");
        assert!(check_static_elf(path, &elf_with_program_header(1)).is_ok());
        let err = check_static_elf(path, &elf_with_program_header(3)).expect_err("dynamic");
        assert!(err.to_string().contains("dynamically linked"), "{err}");
        let err = check_static_elf(path, b"#!/bin/sh\n").expect_err("script");
        assert!(err.to_string().contains("not an ELF"), "{err}");
        let err = check_static_elf(path, &elf_with_program_header(1)[..40]).expect_err("short");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn the_host_test_binary_is_dynamic_or_static_as_ldd_would_say() {
        // The test binary itself is a real ELF; on a glibc host it has an
        // interpreter, which is exactly what the image must not ship.
        let exe = std::env::current_exe().expect("current exe");
        let bytes = fs::read(&exe).expect("read exe");
        let has_interp = String::from_utf8_lossy(&bytes).contains("ld-linux");
        assert_eq!(check_static_elf(&exe, &bytes).is_err(), has_interp);
    }

    #[test]
    fn filter_refuses_a_file_that_is_not_wasm() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("plugin.wasm");
        fs::write(&path, b"not wasm at all").expect("write");
        assert!(matches!(filter(&path), Err(ImageError::NotWasm { .. })));
        let missing = tmp.path().join("missing.wasm");
        let err = filter(&missing).err().expect("missing");
        assert!(err.to_string().contains("make wasm"), "{err}");
    }

    #[test]
    fn filter_image_holds_plugin_wasm_and_says_compat() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("m.wasm");
        let module = b"\0asm\x01\0\0\0rest".to_vec();
        fs::write(&path, &module).expect("write");
        let image = filter(&path).expect("filter image");
        assert_eq!(
            image
                .annotations
                .get(WASM_VARIANT_ANNOTATION)
                .map(String::as_str),
            Some("compat")
        );
        let mut archive =
            tar::Archive::new(flate2::read::GzDecoder::new(image.layer.blob.as_slice()));
        let mut found = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut contents = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut contents).expect("read");
            found.push((path, contents));
        }
        assert_eq!(found, vec![("plugin.wasm".to_string(), module)]);
    }

    #[test]
    fn model_service_needs_models() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let binary = tmp.path().join("model-service");
        fs::write(&binary, elf_with_program_header(1)).expect("write");
        let models = tmp.path().join("models");
        let err = model_service(&binary, &models)
            .err()
            .expect("no models dir");
        assert!(matches!(err, ImageError::MissingInput { .. }), "{err}");
        fs::create_dir_all(models.join("v1")).expect("mkdir");
        let err = model_service(&binary, &models).err().expect("empty models");
        assert!(matches!(err, ImageError::EmptyModels { .. }), "{err}");
        fs::write(models.join("v1/model.json"), b"{}").expect("write");
        let image = model_service(&binary, &models).expect("image");
        let process = image.config.config().as_ref().expect("process config");
        assert_eq!(process.user().as_deref(), Some("65532:65532"));
        assert_eq!(
            process.entrypoint().as_deref(),
            Some(&["/model-service".to_string()][..])
        );
        assert_eq!(
            process.exposed_ports().as_deref(),
            Some(&["8081/tcp".to_string()][..])
        );
    }
}
