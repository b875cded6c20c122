//! `model-service train` and `model-service evaluate`, as `make models` and
//! `make evaluate-models` run them.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_model-service"))
        .args(args)
        .env_remove("MODELS_DIR")
        .output()
        .expect("run model-service");
    assert!(
        out.status.success(),
        "model-service {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn evaluate_prints_the_four_scores_per_version() {
    let out = run(&["evaluate"]);
    assert!(out.contains("test split: 1114 of 5574 messages"), "{out}");
    let header = out
        .lines()
        .find(|l| l.starts_with("version"))
        .expect("a header");
    for column in ["accuracy", "precision", "recall", "spam_f1"] {
        assert!(header.contains(column), "{header}");
    }
    let v1 = out
        .lines()
        .find(|l| l.starts_with("v1 "))
        .expect("a v1 row");
    // v1 classifies 1102 of 1114 test messages correctly (see README).
    assert!(v1.contains("0.9892"), "{v1}");
    for version in ["v2", "v3"] {
        let row = out.lines().find(|l| l.starts_with(version)).expect("a row");
        assert_eq!(row.split_whitespace().count(), 6, "{row}");
    }
    assert!(!out.contains("differ"), "{out}");
}

#[test]
fn train_writes_the_committed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().to_str().unwrap();
    let out = run(&[
        "train",
        "--version",
        "v3",
        "--version",
        "v1",
        "--models-dir",
        models,
    ]);
    assert!(out.contains("v3 ") && out.contains("v1 "), "{out}");
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for file in ["v1.json", "v3.json"] {
        assert_eq!(
            std::fs::read(dir.path().join(file)).unwrap(),
            std::fs::read(committed.join(file)).unwrap(),
            "{file}"
        );
    }
    assert!(!dir.path().join("v2.json").exists());
}

#[test]
fn a_dataset_with_another_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("SMSSpamCollection");
    std::fs::write(&fake, "ham\thello\nspam\tWIN now\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_model-service"))
        .args(["evaluate", "--dataset", fake.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SHA-256"), "{stderr}");
    assert!(stderr.contains(fake.to_str().unwrap()), "{stderr}");
}
