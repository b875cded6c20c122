//! Training the three versions. Everything here is deterministic: seeded
//! shuffles, sums in a fixed order, sorted maps, so `make models` rewrites
//! the committed artifacts byte for byte.

use std::collections::{BTreeMap, HashMap};

use crate::dataset::{Dataset, Rng, SPLIT_SEED, Split, TEST_FRACTION, stratified_split};
use crate::model::{
    Artifact, DatasetInfo, FORMAT, FeatureSpec, InvalidModel, Label, Model, Params, Scores, Version,
};
use crate::text::{FeatureSet, Kind, feature_id, for_each_byte_word, for_each_feature};

/// Laplace smoothing for both naive Bayes versions.
const NB_ALPHA: f64 = 1.0;
/// v3 hashes words into this many bits' worth of buckets.
const HASH_BITS: u32 = 12;

/// v2's features and optimiser settings.
const V2_FEATURES: FeatureSpec = FeatureSpec {
    words: true,
    bigrams: true,
    char_grams: Some([3, 5]),
};
const V2_MIN_DF: u32 = 2;
const V2_EPOCHS: u32 = 12;
const V2_LEARNING_RATE: f64 = 0.5;
const V2_L2: f64 = 1e-5;
const V2_SEED: u64 = 7;

pub fn classifier_name(version: Version) -> &'static str {
    match version {
        Version::V1 => "multinomial-nb-words",
        Version::V2 => "logistic-regression-words-bigrams-chargrams",
        Version::V3 => "hashed-multinomial-nb-byte-words",
    }
}

/// The split every version uses.
pub fn split(dataset: &Dataset) -> Split {
    stratified_split(&dataset.labels(), TEST_FRACTION, SPLIT_SEED)
}

/// Trains `version` on the training split and scores it on the test split,
/// through the same code path the service predicts with.
pub fn train(version: Version, dataset: &Dataset) -> Result<Artifact, InvalidModel> {
    let split = split(dataset);
    let train: Vec<(&str, Label)> = split
        .train
        .iter()
        .map(|&i| (dataset.messages[i].text.as_str(), dataset.messages[i].label))
        .collect();
    let model = match version {
        Version::V1 => naive_bayes(&train),
        Version::V2 => logistic_regression(&train),
        Version::V3 => hashed_naive_bayes(&train),
    };
    let mut artifact = Artifact {
        format: FORMAT,
        version,
        classifier: classifier_name(version).to_string(),
        dataset: DatasetInfo {
            file: crate::dataset::FILE_NAME.to_string(),
            sha256: dataset.sha256.clone(),
            messages: dataset.messages.len() as u32,
            split_seed: SPLIT_SEED,
            test_fraction: TEST_FRACTION,
            train_messages: split.train.len() as u32,
            test_messages: split.test.len() as u32,
        },
        scores: Scores::score(&[], &[]),
        model,
    };
    let loaded = Model::from_artifact(&artifact)?;
    artifact.scores = evaluate(&loaded, dataset, &split);
    Ok(artifact)
}

/// Scores `model` on the test messages of `split`.
pub fn evaluate(model: &Model, dataset: &Dataset, split: &Split) -> Scores {
    let actual: Vec<Label> = split
        .test
        .iter()
        .map(|&i| dataset.messages[i].label)
        .collect();
    let predicted: Vec<Label> = split
        .test
        .iter()
        .map(|&i| model.predict(&dataset.messages[i].text).label)
        .collect();
    Scores::score(&actual, &predicted)
}

fn class(label: Label) -> usize {
    match label {
        Label::Ham => 0,
        Label::Spam => 1,
    }
}

fn log_prior(train: &[(&str, Label)]) -> [f32; 2] {
    let spam = train.iter().filter(|(_, l)| *l == Label::Spam).count() as f64;
    let total = train.len() as f64;
    [
        ((total - spam) / total).ln() as f32,
        (spam / total).ln() as f32,
    ]
}

fn naive_bayes(train: &[(&str, Label)]) -> Params {
    let mut counts: BTreeMap<String, [u64; 2]> = BTreeMap::new();
    let mut totals = [0u64; 2];
    for (text, label) in train {
        for_each_feature(text, FeatureSet::WORDS, |_, chars| {
            let word: String = chars.iter().collect();
            counts.entry(word).or_default()[class(*label)] += 1;
            totals[class(*label)] += 1;
        });
    }
    let vocabulary = counts.len() as f64;
    let log_likelihood = |count: u64, c: usize| {
        ((count as f64 + NB_ALPHA) / (totals[c] as f64 + NB_ALPHA * vocabulary)).ln() as f32
    };
    let words = counts
        .into_iter()
        .map(|(word, [ham, spam])| (word, [log_likelihood(ham, 0), log_likelihood(spam, 1)]))
        .collect();
    Params::NaiveBayes {
        alpha: NB_ALPHA,
        log_prior: log_prior(train),
        words,
    }
}

fn hashed_naive_bayes(train: &[(&str, Label)]) -> Params {
    let buckets = 1usize << HASH_BITS;
    let mask = (buckets - 1) as u64;
    let mut counts = vec![[0u64; 2]; buckets];
    let mut totals = [0u64; 2];
    for (text, label) in train {
        for_each_byte_word(text, |hash| {
            counts[(hash & mask) as usize][class(*label)] += 1;
            totals[class(*label)] += 1;
        });
    }
    let denominator = |c: usize| totals[c] as f64 + NB_ALPHA * buckets as f64;
    let log_odds = counts
        .iter()
        .map(|[ham, spam]| {
            (((*spam as f64 + NB_ALPHA) / denominator(1)).ln()
                - ((*ham as f64 + NB_ALPHA) / denominator(0)).ln()) as f32
        })
        .collect();
    Params::HashedNaiveBayes {
        alpha: NB_ALPHA,
        bits: HASH_BITS,
        log_prior: log_prior(train),
        log_odds,
    }
}

/// Sparse rows: `(feature index, value)`, each index once.
type Row = Vec<(u32, f64)>;

fn logistic_regression(train: &[(&str, Label)]) -> Params {
    let set = V2_FEATURES.to_set();
    // Document frequencies by id, and each id's kind and text.
    let mut df: HashMap<u64, u32> = HashMap::new();
    let mut names: HashMap<u64, (Kind, String)> = HashMap::new();
    let mut doc_ids: Vec<Vec<u64>> = Vec::with_capacity(train.len());
    for (text, _) in train {
        let mut ids = Vec::new();
        for_each_feature(text, set, |kind, chars| {
            let id = feature_id(kind, chars);
            names
                .entry(id)
                .or_insert_with(|| (kind, chars.iter().collect()));
            ids.push(id);
        });
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        for id in distinct {
            *df.entry(id).or_default() += 1;
        }
        doc_ids.push(ids);
    }
    // The vocabulary in a fixed order, whatever the hash maps' order.
    let mut vocabulary: Vec<(Kind, String, u64, f64)> = df
        .iter()
        .filter(|&(_, &count)| count >= V2_MIN_DF)
        .map(|(&id, &count)| {
            let (kind, name) = names[&id].clone();
            let n = train.len() as f64;
            let idf = ((1.0 + n) / (1.0 + f64::from(count))).ln() + 1.0;
            (kind, name, id, idf)
        })
        .collect();
    vocabulary.sort_by(|a, b| (a.0 as u8, &a.1).cmp(&(b.0 as u8, &b.1)));
    let index: HashMap<u64, u32> = vocabulary
        .iter()
        .enumerate()
        .map(|(i, (_, _, id, _))| (*id, i as u32))
        .collect();
    // Rows as the service computes them: each occurrence adds idf, and the
    // sum is divided by the root of the summed squared idfs.
    let rows: Vec<Row> = doc_ids
        .iter()
        .map(|ids| {
            let mut known: Vec<u32> = ids.iter().filter_map(|id| index.get(id).copied()).collect();
            known.sort_unstable();
            let norm = known
                .iter()
                .map(|&i| vocabulary[i as usize].3.powi(2))
                .sum::<f64>()
                .sqrt();
            let mut row: Row = Vec::new();
            for i in known {
                let value = vocabulary[i as usize].3 / norm;
                match row.last_mut() {
                    Some((last, sum)) if *last == i => *sum += value,
                    _ => row.push((i, value)),
                }
            }
            row
        })
        .collect();
    let targets: Vec<f64> = train
        .iter()
        .map(|(_, label)| if *label == Label::Spam { 1.0 } else { 0.0 })
        .collect();
    let (weights, bias) = sgd_logistic(&rows, &targets, vocabulary.len());

    let mut words = BTreeMap::new();
    let mut bigrams = BTreeMap::new();
    let mut char_grams = BTreeMap::new();
    for ((kind, name, _, idf), weight) in vocabulary.into_iter().zip(weights) {
        let map = match kind {
            Kind::Word => &mut words,
            Kind::Bigram => &mut bigrams,
            Kind::CharGram => &mut char_grams,
        };
        map.insert(name, [idf as f32, weight as f32]);
    }
    Params::Linear {
        features: V2_FEATURES,
        min_df: V2_MIN_DF,
        epochs: V2_EPOCHS,
        learning_rate: V2_LEARNING_RATE,
        l2: V2_L2,
        seed: V2_SEED,
        bias: bias as f32,
        words,
        bigrams,
        char_grams,
    }
}

/// Logistic regression by stochastic gradient descent with L2 weight decay,
/// applied through a shared scale factor so each step touches only the
/// features present (Bottou's trick).
fn sgd_logistic(rows: &[Row], targets: &[f64], dimension: usize) -> (Vec<f64>, f64) {
    let mut rng = Rng::new(V2_SEED);
    let mut v = vec![0.0f64; dimension];
    let mut scale = 1.0f64;
    let mut bias = 0.0f64;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut step = 0u64;
    for _ in 0..V2_EPOCHS {
        rng.shuffle(&mut order);
        for &i in &order {
            let rate = V2_LEARNING_RATE / (1.0 + V2_LEARNING_RATE * V2_L2 * step as f64);
            step += 1;
            let z = scale * rows[i].iter().map(|&(f, x)| v[f as usize] * x).sum::<f64>() + bias;
            let gradient = 1.0 / (1.0 + (-z).exp()) - targets[i];
            scale *= 1.0 - rate * V2_L2;
            for &(f, x) in &rows[i] {
                v[f as usize] -= rate * gradient * x / scale;
            }
            bias -= rate * gradient;
            if scale < 1e-6 {
                v.iter_mut().for_each(|w| *w *= scale);
                scale = 1.0;
            }
        }
    }
    (v.into_iter().map(|w| w * scale).collect(), bias)
}
