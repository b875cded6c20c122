//! Reproducible filesystem layers: a tar archive whose bytes depend only on
//! the paths, modes and contents put into it, gzip-compressed with a header
//! that carries no timestamp, file name or host OS.

use std::io::Write;

use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

/// Every entry gets this mtime, so a rebuild from the same inputs gives the
/// same bytes. The epoch is what `SOURCE_DATE_EPOCH=0` tools produce.
const MTIME: u64 = 0;

/// gzip's "unknown" OS byte: the default is the build host's, which would make
/// a layer built on macOS differ from one built on Linux.
const GZIP_OS_UNKNOWN: u8 = 255;

/// What a layer entry is. Only what the images need: no symlinks, no devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File(Vec<u8>),
}

/// One entry: a relative path inside the image (no leading `/`), its
/// permission bits, and what it holds. Owner is always root (0:0): the image
/// runs as a non-root user that only needs to read and execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub kind: EntryKind,
}

impl Entry {
    pub fn dir(path: impl Into<String>) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o755,
            kind: EntryKind::Directory,
        }
    }

    pub fn file(path: impl Into<String>, mode: u32, contents: Vec<u8>) -> Entry {
        Entry {
            path: path.into(),
            mode,
            kind: EntryKind::File(contents),
        }
    }
}

/// A built layer: the compressed blob that goes into the image, and the
/// digest of the uncompressed tar (the config's `rootfs.diff_ids`).
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: String,
}

/// Builds the layer from `entries`, sorted by path so the caller's order
/// does not matter.
pub fn build(mut entries: Vec<Entry>) -> std::io::Result<Layer> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(pair) = entries.windows(2).find(|pair| pair[0].path == pair[1].path) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("duplicate layer entry {}", pair[0].path),
        ));
    }
    let tar = tar_bytes(&entries)?;
    let diff_id = sha256_digest(&tar);
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(Vec::new(), Compression::best());
    encoder.write_all(&tar)?;
    let blob = encoder.finish()?;
    Ok(Layer { blob, diff_id })
}

fn tar_bytes(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mode(entry.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        match &entry.kind {
            EntryKind::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                let path = format!("{}/", entry.path.trim_end_matches('/'));
                builder.append_data(&mut header, path, std::io::empty())?;
            }
            EntryKind::File(contents) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(contents.len() as u64);
                builder.append_data(&mut header, &entry.path, contents.as_slice())?;
            }
        }
    }
    builder.into_inner()
}

/// `sha256:<hex>` of `bytes`, the form OCI descriptors use.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry::file("models/v1/model.json", 0o644, b"{\"w\":1}".to_vec()),
            Entry::dir("models"),
            Entry::file("model-service", 0o755, b"\x7fELF binary".to_vec()),
            Entry::dir("models/v1"),
        ]
    }

    fn unpack(blob: &[u8]) -> Vec<(String, u32, u64, u64, u64, Vec<u8>)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        archive
            .entries()
            .expect("entries")
            .map(|entry| {
                let mut entry = entry.expect("entry");
                let header = entry.header().clone();
                let mut contents = Vec::new();
                entry.read_to_end(&mut contents).expect("read entry");
                (
                    entry.path().expect("path").display().to_string(),
                    header.mode().expect("mode"),
                    header.uid().expect("uid"),
                    header.gid().expect("gid"),
                    header.mtime().expect("mtime"),
                    contents,
                )
            })
            .collect()
    }

    #[test]
    fn same_entries_in_any_order_give_the_same_bytes() {
        let first = build(entries()).expect("build");
        let mut reversed = entries();
        reversed.reverse();
        let second = build(reversed).expect("build");
        assert_eq!(first.blob, second.blob);
        assert_eq!(first.diff_id, second.diff_id);
    }

    #[test]
    fn different_contents_give_a_different_layer() {
        let first = build(entries()).expect("build");
        let mut changed = entries();
        changed[0] = Entry::file("models/v1/model.json", 0o644, b"{\"w\":2}".to_vec());
        let second = build(changed).expect("build");
        assert_ne!(first.diff_id, second.diff_id);
        assert_ne!(first.blob, second.blob);
    }

    #[test]
    fn entries_are_sorted_root_owned_and_timestamp_free() {
        let layer = build(entries()).expect("build");
        let unpacked = unpack(&layer.blob);
        let paths: Vec<&str> = unpacked.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "model-service",
                "models/",
                "models/v1/",
                "models/v1/model.json"
            ]
        );
        for (path, mode, uid, gid, mtime, _) in &unpacked {
            assert_eq!((*uid, *gid, *mtime), (0, 0, 0), "{path}");
            let expected = if path == "models/v1/model.json" {
                0o644
            } else {
                0o755
            };
            assert_eq!(*mode, expected, "{path}");
        }
        assert_eq!(unpacked[0].5, b"\x7fELF binary");
    }

    #[test]
    fn gzip_header_has_no_mtime_no_name_and_unknown_os() {
        let layer = build(entries()).expect("build");
        let header = &layer.blob[..10];
        assert_eq!(&header[..3], &[0x1f, 0x8b, 8], "gzip magic and deflate");
        assert_eq!(header[3], 0, "no FNAME/FEXTRA/FCOMMENT flags");
        assert_eq!(&header[4..8], &[0, 0, 0, 0], "mtime is zero");
        assert_eq!(header[9], GZIP_OS_UNKNOWN);
    }

    #[test]
    fn diff_id_is_the_digest_of_the_uncompressed_tar() {
        let layer = build(entries()).expect("build");
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(layer.blob.as_slice())
            .read_to_end(&mut tar)
            .expect("gunzip");
        assert_eq!(layer.diff_id, sha256_digest(&tar));
    }

    #[test]
    fn long_paths_survive() {
        let long = format!("models/{}/weights.bin", "d".repeat(150));
        let layer = build(vec![Entry::file(long.clone(), 0o644, vec![1, 2, 3])]).expect("build");
        let unpacked = unpack(&layer.blob);
        assert_eq!(unpacked.len(), 1);
        assert_eq!(unpacked[0].0, long);
        assert_eq!(unpacked[0].5, vec![1, 2, 3]);
    }

    #[test]
    fn duplicate_paths_are_rejected() {
        let err = build(vec![Entry::dir("models"), Entry::dir("models")])
            .err()
            .expect("duplicate must fail");
        assert!(
            err.to_string().contains("duplicate layer entry models"),
            "{err}"
        );
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
