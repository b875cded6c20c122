//! The committed artifacts: accuracy targets, byte-for-byte retraining, and
//! clear refusals of missing or corrupt files.

use std::path::{Path, PathBuf};

use model_service::dataset::{self, Dataset};
use model_service::model::{Artifact, Model, Params, Scores, Version};
use model_service::train;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn dataset() -> Dataset {
    let path = dataset::default_path();
    Dataset::load(&path).unwrap_or_else(|err| {
        panic!("{err}\n(the SMS Spam Collection is needed; see model-service/README.md)")
    })
}

fn scores(dataset: &Dataset) -> Vec<(Version, Scores)> {
    let split = train::split(dataset);
    Version::ALL
        .iter()
        .map(|&version| {
            let model = Model::load(&models_dir(), version).unwrap();
            let scores = train::evaluate(&model, dataset, &split);
            assert_eq!(
                scores, model.scores,
                "{version}: scores recomputed from the artifact differ from those it records"
            );
            (version, scores)
        })
        .collect()
}

#[test]
fn committed_models_meet_the_accuracy_targets() {
    let dataset = dataset();
    let scores = scores(&dataset);
    let [(_, v1), (_, v2), (_, v3)] = scores[..] else {
        panic!("three versions");
    };
    assert_eq!(
        v1.true_positives + v1.false_negatives,
        149,
        "spam in the test split"
    );
    assert_eq!(
        v1.true_positives + v1.false_positives + v1.true_negatives + v1.false_negatives,
        1114,
        "a fifth of each class of 5574 messages"
    );
    assert!(v1.accuracy >= 0.975, "v1 accuracy {}", v1.accuracy);
    assert!(v2.f1 >= 0.93, "v2 spam F1 {}", v2.f1);
    assert!(
        v2.f1 > v1.f1,
        "v2 spam F1 {} is not above v1's {}",
        v2.f1,
        v1.f1
    );
    assert!(
        (v3.accuracy - v1.accuracy).abs() <= 0.01,
        "v3 accuracy {} is more than 1 point from v1's {}",
        v3.accuracy,
        v1.accuracy
    );
}

#[test]
fn artifacts_record_the_dataset_and_split() {
    for version in Version::ALL {
        let bytes = std::fs::read(models_dir().join(version.file_name())).unwrap();
        let artifact: Artifact = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(artifact.version, version);
        assert_eq!(artifact.dataset.sha256, dataset::SHA256);
        assert_eq!(artifact.dataset.messages, 5574);
        assert_eq!(artifact.dataset.split_seed, dataset::SPLIT_SEED);
        assert_eq!(artifact.dataset.test_messages, 1114);
    }
}

/// `make models` must reproduce the committed bytes exactly.
#[test]
fn retraining_reproduces_the_committed_artifacts() {
    let dataset = dataset();
    for version in Version::ALL {
        let trained = train::train(version, &dataset).unwrap().to_bytes().unwrap();
        let committed = std::fs::read(models_dir().join(version.file_name())).unwrap();
        assert!(
            trained == committed,
            "{version}: retrained artifact ({} bytes) differs from the committed one ({} bytes); run `make models`",
            trained.len(),
            committed.len()
        );
    }
}

/// v3 is the small variant: a fixed table far smaller than v1's vocabulary.
#[test]
fn v3_is_smaller_than_v1() {
    let read = |v: Version| -> Artifact {
        serde_json::from_slice(&std::fs::read(models_dir().join(v.file_name())).unwrap()).unwrap()
    };
    let Params::NaiveBayes { words, .. } = read(Version::V1).model else {
        panic!("v1 is naive Bayes");
    };
    let Params::HashedNaiveBayes { log_odds, .. } = read(Version::V3).model else {
        panic!("v3 is hashed naive Bayes");
    };
    // v1 keeps two log likelihoods per word, v3 one log odds per bucket.
    assert!(
        log_odds.len() * 3 < words.len() * 2,
        "{} buckets vs {} words",
        log_odds.len(),
        words.len()
    );
    let size = |v: Version| {
        std::fs::metadata(models_dir().join(v.file_name()))
            .unwrap()
            .len()
    };
    assert!(size(Version::V3) * 4 < size(Version::V1));
}

fn temp_models(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(tag).tempdir().unwrap()
}

fn load_error(dir: &Path, version: Version) -> String {
    Model::load(dir, version).unwrap_err().to_string()
}

#[test]
fn missing_artifact_is_named() {
    let dir = temp_models("missing");
    let err = load_error(dir.path(), Version::V2);
    let path = dir.path().join("v2.json");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn corrupt_artifacts_are_refused_with_the_problem() {
    let dir = temp_models("corrupt");
    let v1 = std::fs::read_to_string(models_dir().join("v1.json")).unwrap();
    let v3 = std::fs::read_to_string(models_dir().join("v3.json")).unwrap();
    let cases: Vec<(Version, String, &str)> = vec![
        (
            Version::V1,
            v1[..v1.len() / 2].to_string(),
            "not a valid model artifact",
        ),
        (
            Version::V1,
            "not json".to_string(),
            "not a valid model artifact",
        ),
        (Version::V2, v1.clone(), "holds model v1, expected v2"),
        (
            Version::V1,
            v1.replacen("\"format\":1", "\"format\":9", 1),
            "format 9 is not supported",
        ),
        (
            Version::V3,
            v3.replacen("\"log_odds\":[", "\"log_odds\":[0.5,", 1),
            "log_odds holds 4097 buckets",
        ),
        (
            Version::V3,
            v3.replacen("\"bits\":12", "\"bits\":40", 1),
            "bits 40",
        ),
    ];
    for (version, content, problem) in cases {
        std::fs::write(dir.path().join(version.file_name()), &content).unwrap();
        let err = load_error(dir.path(), version);
        assert!(err.contains(problem), "expected {problem:?} in {err}");
        assert!(err.contains(&version.file_name()), "file not named: {err}");
    }
}
