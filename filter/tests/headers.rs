//! The host's serialized header map: round trips, duplicates, and malformed
//! buffers that must yield nothing rather than panic.

use proptest::prelude::*;
use sms_checker_filter::headers::{all, first, parse, serialize};

#[test]
fn round_trip_with_duplicates_and_empty_values() {
    let pairs: Vec<(&[u8], &[u8])> = vec![
        (b":authority", b"model-service-shadow:8080"),
        (b"cookie", b"a=1"),
        (b"x-empty", b""),
        (b"cookie", b"sms-checker-uid=abc"),
    ];
    let bytes = serialize(&pairs);
    let parsed = parse(&bytes);
    assert_eq!(parsed, pairs);
    assert_eq!(first(&parsed, "cookie"), Some(&b"a=1"[..]));
    assert_eq!(first(&parsed, "x-empty"), Some(&b""[..]));
    assert_eq!(first(&parsed, "missing"), None);
    let cookies: Vec<&[u8]> = all(&parsed, "cookie").collect();
    assert_eq!(cookies, vec![&b"a=1"[..], &b"sms-checker-uid=abc"[..]]);
}

#[test]
fn empty_and_malformed_buffers_give_no_pairs() {
    assert!(parse(&[]).is_empty());
    assert!(parse(&serialize(&[])).is_empty());
    let good = serialize(&[(b"a", b"1"), (b"bb", b"22")]);
    for cut in 1..good.len() {
        assert!(parse(&good[..cut]).is_empty(), "truncated at {cut}");
    }
    // A count far larger than the buffer.
    let mut huge = good.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse(&huge).is_empty());
    // A length pointing past the end.
    let mut long = good;
    long[4..8].copy_from_slice(&1000u32.to_le_bytes());
    assert!(parse(&long).is_empty());
}

proptest! {
    #[test]
    fn arbitrary_buffers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn serialized_pairs_round_trip(pairs in prop::collection::vec(
        (prop::collection::vec(any::<u8>(), 0..20), prop::collection::vec(any::<u8>(), 0..40)), 0..12)) {
        let borrowed: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
        let bytes = serialize(&borrowed);
        prop_assert_eq!(parse(&bytes), borrowed);
    }
}
