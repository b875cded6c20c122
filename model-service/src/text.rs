//! Turning an SMS into features, without allocating.
//!
//! Training and prediction share [`for_each_feature`], so a term in an
//! artifact always maps to the id the request path computes for it.

/// Longer words keep only their first characters: it bounds the stack
/// buffers below, and tokens that long are URLs or noise.
pub const MAX_WORD_CHARS: usize = 24;

/// The kind of a feature; part of its id, so a word and a character n-gram
/// with the same characters stay apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Word = 1,
    Bigram = 2,
    CharGram = 3,
}

/// Which features a model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureSet {
    pub words: bool,
    pub bigrams: bool,
    /// Character n-grams of each word padded with a space on both sides,
    /// `n` from `.0` to `.1` inclusive (`None`: no character n-grams).
    pub char_grams: Option<(usize, usize)>,
}

impl FeatureSet {
    pub const WORDS: FeatureSet = FeatureSet {
        words: true,
        bigrams: false,
        char_grams: None,
    };
}

/// Currency signs are strong spam cues and are not alphanumeric, so they
/// count as one-character words.
fn is_symbol_word(c: char) -> bool {
    matches!(c, '£' | '$' | '€')
}

/// Where the tokenizer sends features.
trait Sink {
    fn feature(&mut self, kind: Kind, chars: &[char]);

    /// Every n-gram of `padded` with `n` in `lo..=hi`, by start then `n`.
    fn char_grams(&mut self, padded: &[char], lo: usize, hi: usize) {
        for start in 0..padded.len() {
            for n in lo..=hi {
                if start + n > padded.len() {
                    break;
                }
                self.feature(Kind::CharGram, &padded[start..start + n]);
            }
        }
    }
}

/// Features as characters (training needs their text).
struct CharSink<F>(F);

impl<F: FnMut(Kind, &[char])> Sink for CharSink<F> {
    fn feature(&mut self, kind: Kind, chars: &[char]) {
        (self.0)(kind, chars);
    }
}

/// Features as ids (prediction). The n-grams starting at one position share
/// their prefix, so one running hash serves all their lengths.
struct IdSink<F>(F);

impl<F: FnMut(u64)> Sink for IdSink<F> {
    fn feature(&mut self, kind: Kind, chars: &[char]) {
        (self.0)(feature_id(kind, chars));
    }

    fn char_grams(&mut self, padded: &[char], lo: usize, hi: usize) {
        for start in 0..padded.len() {
            let mut hash = fnv_start(Kind::CharGram);
            for (i, &c) in padded[start..].iter().take(hi).enumerate() {
                hash = fnv_step(hash, c);
                if i + 1 >= lo {
                    (self.0)(mix64(hash));
                }
            }
        }
    }
}

/// Calls `emit` with each feature of `text`, as its kind and its lowercase
/// characters. Words are maximal runs of alphanumeric characters.
pub fn for_each_feature(text: &str, set: FeatureSet, emit: impl FnMut(Kind, &[char])) {
    walk(text, set, &mut CharSink(emit));
}

/// Calls `emit` with the id ([`feature_id`]) of each feature of `text`, in
/// the order of [`for_each_feature`], hashing each character once per length.
pub fn for_each_feature_id(text: &str, set: FeatureSet, emit: impl FnMut(u64)) {
    walk(text, set, &mut IdSink(emit));
}

fn walk(text: &str, set: FeatureSet, sink: &mut impl Sink) {
    let mut word = ['\0'; MAX_WORD_CHARS];
    let mut len = 0usize;
    let mut prev = ['\0'; MAX_WORD_CHARS];
    let mut prev_len = 0usize;
    let mut chars = text.chars();
    loop {
        let next = chars.next();
        match next {
            // ASCII first: nearly every SMS is ASCII, and the Unicode
            // tables are several times slower.
            Some(c) if c.is_ascii_alphanumeric() => {
                if len < MAX_WORD_CHARS {
                    word[len] = c.to_ascii_lowercase();
                    len += 1;
                }
                continue;
            }
            Some(c) if c.is_ascii() => {}
            Some(c) if c.is_alphanumeric() => {
                for lower in c.to_lowercase() {
                    if len < MAX_WORD_CHARS {
                        word[len] = lower;
                        len += 1;
                    }
                }
                continue;
            }
            _ => {}
        }
        if len > 0 {
            emit_word(&word[..len], &prev[..prev_len], set, sink);
            prev[..len].copy_from_slice(&word[..len]);
            prev_len = len;
            len = 0;
        }
        match next {
            Some(c) if is_symbol_word(c) => {
                let symbol = [c];
                emit_word(&symbol, &prev[..prev_len], set, sink);
                prev[0] = c;
                prev_len = 1;
            }
            Some(_) => {}
            None => break,
        }
    }
}

fn emit_word(word: &[char], prev: &[char], set: FeatureSet, sink: &mut impl Sink) {
    if set.words {
        sink.feature(Kind::Word, word);
    }
    if set.bigrams && !prev.is_empty() {
        let mut pair = ['\0'; 2 * MAX_WORD_CHARS + 1];
        pair[..prev.len()].copy_from_slice(prev);
        pair[prev.len()] = ' ';
        pair[prev.len() + 1..prev.len() + 1 + word.len()].copy_from_slice(word);
        sink.feature(Kind::Bigram, &pair[..prev.len() + 1 + word.len()]);
    }
    if let Some((lo, hi)) = set.char_grams {
        let mut padded = [' '; MAX_WORD_CHARS + 2];
        padded[1..=word.len()].copy_from_slice(word);
        sink.char_grams(&padded[..word.len() + 2], lo, hi);
    }
}

/// The cheap tokenizer of the hashed model (v3): one pass over the bytes,
/// no decoding and no buffer. A word is a run of ASCII letters and digits
/// (lowercased) and non-ASCII bytes (kept as they are, so `£5` is one
/// word); each word is reported as a 64-bit hash of its bytes.
pub fn for_each_byte_word(text: &str, mut emit: impl FnMut(u64)) {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut in_word = false;
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || !byte.is_ascii() {
            hash = (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(PRIME);
            in_word = true;
        } else if in_word {
            emit(mix64(hash));
            hash = OFFSET;
            in_word = false;
        }
    }
    if in_word {
        emit(mix64(hash));
    }
}

/// A 64-bit id for a feature: FNV-1a over its kind and characters, then a
/// SplitMix64 finaliser so that the low bits (used as hash buckets) mix well.
pub fn feature_id(kind: Kind, chars: &[char]) -> u64 {
    mix64(
        chars
            .iter()
            .fold(fnv_start(kind), |hash, &c| fnv_step(hash, c)),
    )
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv_start(kind: Kind) -> u64 {
    (FNV_OFFSET ^ kind as u64).wrapping_mul(FNV_PRIME)
}

fn fnv_step(hash: u64, c: char) -> u64 {
    (hash ^ c as u64).wrapping_mul(FNV_PRIME)
}

/// SplitMix64's output function: a cheap bijective bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The characters of a term as stored in an artifact, checked against the
/// limits the tokenizer guarantees.
pub fn term_chars(term: &str, kind: Kind) -> Option<Vec<char>> {
    let chars: Vec<char> = term.chars().collect();
    let max = match kind {
        Kind::Word | Kind::CharGram => MAX_WORD_CHARS + 2,
        Kind::Bigram => 2 * MAX_WORD_CHARS + 1,
    };
    (!chars.is_empty() && chars.len() <= max).then_some(chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &str, set: FeatureSet) -> Vec<(Kind, String)> {
        let mut out = Vec::new();
        for_each_feature(text, set, |kind, chars| {
            out.push((kind, chars.iter().collect()))
        });
        out
    }

    #[test]
    fn words_are_lowercase_alphanumeric_runs_and_currency_signs() {
        let words: Vec<String> = collect("WIN £100 now!!! Call 0800-FREE", FeatureSet::WORDS)
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        assert_eq!(words, ["win", "£", "100", "now", "call", "0800", "free"]);
    }

    #[test]
    fn bigrams_join_neighbouring_words() {
        let set = FeatureSet {
            words: false,
            bigrams: true,
            char_grams: None,
        };
        let grams: Vec<String> = collect("free entry now", set)
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        assert_eq!(grams, ["free entry", "entry now"]);
    }

    #[test]
    fn char_grams_pad_each_word() {
        let set = FeatureSet {
            words: false,
            bigrams: false,
            char_grams: Some((3, 4)),
        };
        let grams: Vec<String> = collect("Hi", set).into_iter().map(|(_, w)| w).collect();
        assert_eq!(grams, [" hi", " hi ", "hi "]);
    }

    #[test]
    fn long_words_are_truncated() {
        let long = "a".repeat(100);
        let words = collect(&long, FeatureSet::WORDS);
        assert_eq!(words.len(), 1);
        assert_eq!(words[0].1.chars().count(), MAX_WORD_CHARS);
    }

    #[test]
    fn ids_depend_on_kind_and_characters() {
        let abc: Vec<char> = "abc".chars().collect();
        let abd: Vec<char> = "abd".chars().collect();
        assert_ne!(
            feature_id(Kind::Word, &abc),
            feature_id(Kind::CharGram, &abc)
        );
        assert_ne!(feature_id(Kind::Word, &abc), feature_id(Kind::Word, &abd));
        assert_eq!(feature_id(Kind::Word, &abc), feature_id(Kind::Word, &abc));
    }

    #[test]
    fn byte_words_fold_ascii_case_and_keep_other_bytes() {
        let hashes = |text: &str| {
            let mut out = Vec::new();
            for_each_byte_word(text, |h| out.push(h));
            out
        };
        assert_eq!(hashes("Call NOW, call now!"), {
            let h = hashes("call now");
            [h[0], h[1], h[0], h[1]].to_vec()
        });
        assert_eq!(hashes("win £5 now").len(), 3);
        assert_ne!(hashes("£5"), hashes("5"));
        assert!(hashes(" ,.!? ").is_empty());
    }

    #[test]
    fn ids_match_the_characters_they_stand_for() {
        let sets = [
            FeatureSet::WORDS,
            FeatureSet {
                words: true,
                bigrams: true,
                char_grams: Some((3, 5)),
            },
            FeatureSet {
                words: false,
                bigrams: false,
                char_grams: Some((1, 30)),
            },
        ];
        let texts = [
            "URGENT! You have WON a £1000 prize, call 09061701461 now",
            "ok lar... joking wif u oni",
            "Çà et là, ÉTÉ ﬁn İstanbul",
            &"x".repeat(40),
            "",
        ];
        for set in sets {
            for text in texts {
                let mut from_chars = Vec::new();
                for_each_feature(text, set, |kind, chars| {
                    from_chars.push(feature_id(kind, chars))
                });
                let mut ids = Vec::new();
                for_each_feature_id(text, set, |id| ids.push(id));
                assert_eq!(ids, from_chars, "{text:?} {set:?}");
            }
        }
    }

    #[test]
    fn text_without_words_has_no_features() {
        assert!(collect("  ?!. ", FeatureSet::WORDS).is_empty());
        assert!(collect("", FeatureSet::WORDS).is_empty());
    }
}
