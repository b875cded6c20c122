//! The SMS Spam Collection: where it is, its pinned checksum, and the
//! seeded stratified split every model is trained and scored on.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::Label;

/// SHA-256 of the UCI release's `SMSSpamCollection` file.
pub const SHA256: &str = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d";
pub const FILE_NAME: &str = "SMSSpamCollection";
/// Where the canonical release is published (a zip holding `FILE_NAME`);
/// `scripts/fetch-dataset.sh` downloads it and checks [`SHA256`].
pub const SOURCE_URL: &str =
    "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip";

/// The split every artifact records: 20 % of each class held out.
pub const SPLIT_SEED: u64 = 42;
pub const TEST_FRACTION: f64 = 0.2;

/// The folder the project's large inputs are shared in (the dataset, and
/// the Istio CRDs the chart tests use): `$SMS_SHARED_DIR`, else `../shared`
/// beside the checkout. The Makefile's default is the same folder
/// (tests/tests/make_names.rs checks it).
pub fn shared_dir() -> PathBuf {
    std::env::var_os(crate::config::env::SMS_SHARED_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(default_shared_dir)
}

/// `../shared` beside the checkout the binary was built from.
pub fn default_shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// `$SMS_SHARED_DIR/data/sms-spam-collection/SMSSpamCollection`.
pub fn default_path() -> PathBuf {
    shared_dir()
        .join("data/sms-spam-collection")
        .join(FILE_NAME)
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(
        "cannot read the dataset {}: {source} (run `make dataset` to fetch it, or set SMS_SHARED_DIR)",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dataset {}: SHA-256 is {actual}, expected {expected}", path.display())]
    Checksum {
        path: PathBuf,
        expected: &'static str,
        actual: String,
    },
    #[error("dataset {} line {line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

#[derive(Clone, Debug)]
pub struct Message {
    pub label: Label,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub path: PathBuf,
    pub sha256: String,
    pub messages: Vec<Message>,
}

impl Dataset {
    /// Reads the file, refusing it unless its SHA-256 is the pinned one.
    pub fn load(path: &Path) -> Result<Dataset, DatasetError> {
        let bytes = std::fs::read(path).map_err(|source| DatasetError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let actual = hex(&Sha256::digest(&bytes));
        if actual != SHA256 {
            return Err(DatasetError::Checksum {
                path: path.to_path_buf(),
                expected: SHA256,
                actual,
            });
        }
        let line_error = |line: usize, problem: &str| DatasetError::Line {
            path: path.to_path_buf(),
            line,
            problem: problem.to_string(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| line_error(0, "not UTF-8"))?;
        let mut messages = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let (label, body) = line
                .split_once('\t')
                .ok_or_else(|| line_error(index + 1, "no tab between label and message"))?;
            let label = match label {
                "ham" => Label::Ham,
                "spam" => Label::Spam,
                _ => return Err(line_error(index + 1, "label is neither ham nor spam")),
            };
            messages.push(Message {
                label,
                text: body.to_string(),
            });
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            sha256: actual,
            messages,
        })
    }

    pub fn labels(&self) -> Vec<Label> {
        self.messages.iter().map(|m| m.label).collect()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SplitMix64: a tiny, well-known generator, so that shuffles are the same
/// on every machine and in every build.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::text::mix64(self.0)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Indices of the training and test messages, each in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Holds out `test_fraction` of each class, chosen by a seeded shuffle.
pub fn stratified_split(labels: &[Label], test_fraction: f64, seed: u64) -> Split {
    let mut rng = Rng::new(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in [Label::Ham, Label::Spam] {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        rng.shuffle(&mut members);
        let held_out = (members.len() as f64 * test_fraction).round() as usize;
        test.extend_from_slice(&members[..held_out]);
        train.extend_from_slice(&members[held_out..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Split { train, test }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        let labels: Vec<Label> = (0..1000)
            .map(|i| if i % 7 == 0 { Label::Spam } else { Label::Ham })
            .collect();
        let split = stratified_split(&labels, 0.2, 7);
        assert_eq!(split.train.len() + split.test.len(), 1000);
        let spam_test = split
            .test
            .iter()
            .filter(|&&i| labels[i] == Label::Spam)
            .count();
        assert_eq!(spam_test, (143.0f64 * 0.2).round() as usize);
        assert!(
            split
                .test
                .iter()
                .all(|i| split.train.binary_search(i).is_err())
        );
        assert_eq!(split, stratified_split(&labels, 0.2, 7));
        assert_ne!(split, stratified_split(&labels, 0.2, 8));
    }

    #[test]
    fn wrong_checksum_is_refused() {
        let dir = std::env::temp_dir().join(format!("sms-dataset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        std::fs::write(&path, "ham\thello\n").unwrap();
        let err = Dataset::load(&path).unwrap_err();
        assert!(matches!(err, DatasetError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains(SHA256));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
