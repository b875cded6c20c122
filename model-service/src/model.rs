//! Trained artifacts on disk and the classifiers built from them.
//!
//! An artifact is deterministic JSON (sorted maps, shortest round-trip
//! floats), so retraining on the same data reproduces it byte for byte.
//! Loading turns it into lookup tables keyed by feature id, so a
//! prediction hashes each feature once and allocates nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::text::{
    FeatureSet, Kind, feature_id, for_each_byte_word, for_each_feature_id, term_chars,
};

/// The artifact layout this build reads and writes.
pub const FORMAT: u32 = 1;

/// A model version the service can serve.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
    V3,
}

impl Version {
    pub const ALL: [Version; 3] = [Version::V1, Version::V2, Version::V3];

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::V3 => "v3",
        }
    }

    /// The artifact's file name inside the models folder.
    pub fn file_name(self) -> String {
        format!("{}.json", self.as_str())
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Ham,
    Spam,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Ham => "ham",
            Label::Spam => "spam",
        }
    }
}

/// Test-split scores, spam being the positive class (what `evaluate` prints
/// and each artifact records; the service's Prometheus metrics are
/// [`crate::metrics::Metrics`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub true_positives: u32,
    pub false_positives: u32,
    pub true_negatives: u32,
    pub false_negatives: u32,
}

impl Scores {
    /// Scores `predicted` against `actual`, pairwise.
    pub fn score(actual: &[Label], predicted: &[Label]) -> Scores {
        let (mut tp, mut fp, mut tn, mut fneg) = (0u32, 0u32, 0u32, 0u32);
        for (a, p) in actual.iter().zip(predicted) {
            match (a, p) {
                (Label::Spam, Label::Spam) => tp += 1,
                (Label::Ham, Label::Spam) => fp += 1,
                (Label::Ham, Label::Ham) => tn += 1,
                (Label::Spam, Label::Ham) => fneg += 1,
            }
        }
        let ratio = |num: u32, den: u32| {
            if den == 0 {
                0.0
            } else {
                f64::from(num) / f64::from(den)
            }
        };
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fneg);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Scores {
            accuracy: ratio(tp + tn, tp + fp + tn + fneg),
            precision,
            recall,
            f1,
            true_positives: tp,
            false_positives: fp,
            true_negatives: tn,
            false_negatives: fneg,
        }
    }
}

/// Where the model was trained and how the data was split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub file: String,
    pub sha256: String,
    pub messages: u32,
    pub split_seed: u64,
    pub test_fraction: f64,
    pub train_messages: u32,
    pub test_messages: u32,
}

/// Which features a linear model reads, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    pub words: bool,
    pub bigrams: bool,
    pub char_grams: Option<[u8; 2]>,
}

impl FeatureSpec {
    pub fn to_set(self) -> FeatureSet {
        FeatureSet {
            words: self.words,
            bigrams: self.bigrams,
            char_grams: self
                .char_grams
                .map(|[lo, hi]| (usize::from(lo), usize::from(hi))),
        }
    }
}

/// The learned parameters, by kind of model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Params {
    /// Multinomial naive Bayes on words: per class, the log prior and each
    /// word's smoothed log likelihood, `[ham, spam]`.
    NaiveBayes {
        alpha: f64,
        log_prior: [f32; 2],
        words: BTreeMap<String, [f32; 2]>,
    },
    /// Logistic regression on idf-weighted, length-normalised features:
    /// each term maps to `[idf, weight]`.
    Linear {
        features: FeatureSpec,
        min_df: u32,
        epochs: u32,
        learning_rate: f64,
        l2: f64,
        seed: u64,
        bias: f32,
        words: BTreeMap<String, [f32; 2]>,
        bigrams: BTreeMap<String, [f32; 2]>,
        char_grams: BTreeMap<String, [f32; 2]>,
    },
    /// Multinomial naive Bayes on byte-level words (see
    /// [`crate::text::for_each_byte_word`]) hashed into `2^bits` buckets; each
    /// bucket holds `log P(bucket|spam) - log P(bucket|ham)`.
    HashedNaiveBayes {
        alpha: f64,
        bits: u32,
        log_prior: [f32; 2],
        log_odds: Vec<f32>,
    },
}

/// One trained model version, as committed under `models/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub format: u32,
    pub version: Version,
    pub classifier: String,
    pub dataset: DatasetInfo,
    /// `metrics` in the artifact's JSON, which stays as it was written.
    #[serde(rename = "metrics")]
    pub scores: Scores,
    pub model: Params,
}

impl Artifact {
    /// The exact bytes written to disk.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut bytes = serde_json::to_vec(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

/// Why an artifact could not be loaded; always names the file.
#[derive(Debug, thiserror::Error)]
#[error("model artifact {}: {problem}", path.display())]
pub struct ArtifactError {
    pub path: PathBuf,
    pub problem: String,
}

/// An artifact whose parameters cannot make a model (what is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidModel(pub String);

/// Passes ids through: they are already well-mixed 64-bit hashes.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
enum Scorer {
    NaiveBayes {
        bias: f32,
        log_odds: IdMap<f32>,
    },
    Linear {
        set: FeatureSet,
        bias: f32,
        /// `(idf, idf * weight)` per feature.
        terms: IdMap<(f32, f32)>,
    },
    Hashed {
        bias: f32,
        mask: u64,
        log_odds: Box<[f32]>,
    },
}

/// A verdict and the model's probability that the message is spam.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub label: Label,
    pub spam_probability: f32,
}

impl Prediction {
    fn from_log_odds(score: f32) -> Prediction {
        let spam_probability = 1.0 / (1.0 + (-score).exp());
        Prediction {
            label: if score > 0.0 { Label::Spam } else { Label::Ham },
            spam_probability,
        }
    }

    /// The probability of the label given.
    pub fn confidence(&self) -> f32 {
        match self.label {
            Label::Spam => self.spam_probability,
            Label::Ham => 1.0 - self.spam_probability,
        }
    }
}

/// A model ready to classify.
#[derive(Debug)]
pub struct Model {
    pub version: Version,
    pub classifier: String,
    pub scores: Scores,
    pub dataset_sha256: String,
    scorer: Scorer,
}

impl Model {
    /// Reads and checks `<dir>/<version>.json`.
    pub fn load(dir: &Path, version: Version) -> Result<Model, ArtifactError> {
        let path = dir.join(version.file_name());
        let fail = |problem: String| ArtifactError {
            path: path.clone(),
            problem,
        };
        let bytes = std::fs::read(&path).map_err(|err| fail(format!("cannot read: {err}")))?;
        let artifact: Artifact = serde_json::from_slice(&bytes)
            .map_err(|err| fail(format!("not a valid model artifact: {err}")))?;
        if artifact.version != version {
            return Err(fail(format!(
                "holds model {}, expected {version}",
                artifact.version
            )));
        }
        Model::from_artifact(&artifact).map_err(|err| fail(err.0))
    }

    /// Builds the lookup tables, rejecting any inconsistent parameter.
    pub fn from_artifact(artifact: &Artifact) -> Result<Model, InvalidModel> {
        if artifact.format != FORMAT {
            return Err(InvalidModel(format!(
                "format {} is not supported (this build reads format {FORMAT})",
                artifact.format
            )));
        }
        let scorer = match &artifact.model {
            Params::NaiveBayes {
                log_prior, words, ..
            } => {
                let bias = finite(log_prior[1] - log_prior[0], "log_prior")?;
                let mut log_odds = IdMap::default();
                for (word, [ham, spam]) in words {
                    let odds = finite(spam - ham, word)?;
                    log_odds.insert(term_id(Kind::Word, word)?, odds);
                }
                Scorer::NaiveBayes { bias, log_odds }
            }
            Params::Linear {
                features,
                bias,
                words,
                bigrams,
                char_grams,
                ..
            } => {
                let set = features.to_set();
                if let Some((lo, hi)) = set.char_grams
                    && (lo == 0 || lo > hi || hi > crate::text::MAX_WORD_CHARS)
                {
                    return Err(InvalidModel(format!(
                        "invalid character n-gram range {lo}..={hi}"
                    )));
                }
                let mut terms = IdMap::default();
                for (kind, map) in [
                    (Kind::Word, words),
                    (Kind::Bigram, bigrams),
                    (Kind::CharGram, char_grams),
                ] {
                    for (term, [idf, weight]) in map {
                        let idf = finite(*idf, term)?;
                        if idf <= 0.0 {
                            return Err(InvalidModel(format!(
                                "term {term:?} has a non-positive idf"
                            )));
                        }
                        let weighted = finite(idf * weight, term)?;
                        terms.insert(term_id(kind, term)?, (idf, weighted));
                    }
                }
                Scorer::Linear {
                    set,
                    bias: finite(*bias, "bias")?,
                    terms,
                }
            }
            Params::HashedNaiveBayes {
                bits,
                log_prior,
                log_odds,
                ..
            } => {
                if !(1..=24).contains(bits) {
                    return Err(InvalidModel(format!("bits {bits} is outside 1..=24")));
                }
                if log_odds.len() != 1usize << bits {
                    return Err(InvalidModel(format!(
                        "log_odds holds {} buckets, expected 2^{bits} = {}",
                        log_odds.len(),
                        1usize << bits
                    )));
                }
                for value in log_odds {
                    finite(*value, "log_odds")?;
                }
                Scorer::Hashed {
                    bias: finite(log_prior[1] - log_prior[0], "log_prior")?,
                    mask: (1u64 << bits) - 1,
                    log_odds: log_odds.clone().into_boxed_slice(),
                }
            }
        };
        Ok(Model {
            version: artifact.version,
            classifier: artifact.classifier.clone(),
            scores: artifact.scores,
            dataset_sha256: artifact.dataset.sha256.clone(),
            scorer,
        })
    }

    /// Classifies one message. Allocates nothing.
    pub fn predict(&self, text: &str) -> Prediction {
        let score = match &self.scorer {
            Scorer::NaiveBayes { bias, log_odds } => {
                let mut score = *bias;
                for_each_feature_id(text, FeatureSet::WORDS, |id| {
                    if let Some(odds) = log_odds.get(&id) {
                        score += odds;
                    }
                });
                score
            }
            Scorer::Linear { set, bias, terms } => {
                let (mut dot, mut norm) = (0.0f32, 0.0f32);
                for_each_feature_id(text, *set, |id| {
                    if let Some((idf, weighted)) = terms.get(&id) {
                        dot += weighted;
                        norm += idf * idf;
                    }
                });
                if norm > 0.0 {
                    bias + dot / norm.sqrt()
                } else {
                    *bias
                }
            }
            Scorer::Hashed {
                bias,
                mask,
                log_odds,
            } => {
                let mut score = *bias;
                for_each_byte_word(text, |hash| {
                    // The mask keeps the index inside the table.
                    score += log_odds[(hash & mask) as usize];
                });
                score
            }
        };
        Prediction::from_log_odds(score)
    }
}

fn finite(value: f32, what: &str) -> Result<f32, InvalidModel> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(InvalidModel(format!("{what:?} has a non-finite value")))
    }
}

fn term_id(kind: Kind, term: &str) -> Result<u64, InvalidModel> {
    term_chars(term, kind)
        .map(|chars| feature_id(kind, &chars))
        .ok_or_else(|| {
            InvalidModel(format!(
                "term {term:?} is empty or longer than the tokenizer emits"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_confusion_matrix() {
        use Label::{Ham, Spam};
        let actual = [Spam, Spam, Spam, Ham, Ham, Ham, Ham, Ham];
        let predicted = [Spam, Spam, Ham, Spam, Ham, Ham, Ham, Ham];
        let m = Scores::score(&actual, &predicted);
        assert_eq!(
            (
                m.true_positives,
                m.false_negatives,
                m.false_positives,
                m.true_negatives
            ),
            (2, 1, 1, 4)
        );
        assert_eq!(m.accuracy, 6.0 / 8.0);
        assert_eq!(m.precision, 2.0 / 3.0);
        assert_eq!(m.recall, 2.0 / 3.0);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
        // No spam predicted at all: precision and F1 are 0, not NaN.
        let none = Scores::score(&[Spam, Ham], &[Ham, Ham]);
        assert_eq!((none.precision, none.f1), (0.0, 0.0));
    }

    #[test]
    fn log_odds_give_label_and_confidence() {
        let spam = Prediction::from_log_odds(2.0);
        assert_eq!(spam.label, Label::Spam);
        assert!((spam.confidence() - 0.880_797).abs() < 1e-5);
        let ham = Prediction::from_log_odds(-2.0);
        assert_eq!(ham.label, Label::Ham);
        assert!((ham.confidence() - spam.confidence()).abs() < 1e-6);
    }

    #[test]
    fn ids_pass_through_the_hasher() {
        let mut hasher = IdHasher::default();
        hasher.write_u64(0xdead_beef);
        assert_eq!(hasher.finish(), 0xdead_beef);
    }
}
