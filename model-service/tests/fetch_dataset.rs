//! `scripts/fetch-dataset.sh` (behind `make dataset`): the canonical source
//! is out of reach here, so a local zip stands in for it through
//! `SMS_DATASET_URL`; the unpacking and checksum paths are the real ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use model_service::dataset::{self, SHA256};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-dataset.sh")
}

/// A zip holding `SMSSpamCollection` with `content`, as UCI ships it.
fn zip_with(dir: &Path, content: &[u8]) -> PathBuf {
    let source = dir.join("source");
    std::fs::write(&source, content).unwrap();
    let zip = dir.join("collection.zip");
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').write(sys.argv[2], 'SMSSpamCollection')",
        ])
        .arg(&zip)
        .arg(&source)
        .status()
        .expect("python3 runs");
    assert!(status.success());
    zip
}

fn fetch(dest: &Path, zip: &Path) -> std::process::Output {
    Command::new("bash")
        .arg(script())
        .arg(dest)
        .arg(SHA256)
        .env("SMS_DATASET_URL", format!("file://{}", zip.display()))
        .output()
        .expect("bash runs")
}

#[test]
fn fetches_unpacks_and_checks_the_collection() {
    let real = std::fs::read(dataset::default_path()).expect("the shared dataset");
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_with(dir.path(), &real);
    let dest = dir
        .path()
        .join("shared/data/sms-spam-collection/SMSSpamCollection");

    let out = fetch(&dest, &zip);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&dest).unwrap(), real);
    assert!(dataset::Dataset::load(&dest).is_ok());

    // Present and correct: nothing to do, even with the source gone.
    std::fs::remove_file(&zip).unwrap();
    let out = fetch(&dest, &zip);
    assert!(out.status.success());
}

#[test]
fn refuses_a_download_with_another_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_with(dir.path(), b"ham\ttampered\n");
    let dest = dir.path().join("SMSSpamCollection");
    let out = fetch(&dest, &zip);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(SHA256), "{stderr}");
    assert!(!dest.exists(), "a bad download must not be left in place");
}

#[test]
fn refuses_an_existing_file_with_another_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("SMSSpamCollection");
    std::fs::write(&dest, "ham\thello\n").unwrap();
    let out = fetch(&dest, &dir.path().join("absent.zip"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists but its SHA-256"));
}
