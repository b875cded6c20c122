//! Cookie and user-id header parsing: malformed, duplicated and oversized input.

use sms_checker_filter::config::CookieConfig;
use sms_checker_filter::cookie::{
    MAX_ID_LEN, NEW_ID_LEN, SetCookie, find_cookie, id_from_seed, is_valid_cookie_id, new_id,
    user_id_from_header,
};

const NAME: &[u8] = b"sms-checker-uid";

fn find(header: &str) -> Option<&str> {
    find_cookie(header.as_bytes(), NAME).map(|v| std::str::from_utf8(v).unwrap())
}

#[test]
fn finds_the_cookie_among_others() {
    assert_eq!(find("sms-checker-uid=abc123"), Some("abc123"));
    assert_eq!(find("a=1; sms-checker-uid=abc123; b=2"), Some("abc123"));
    assert_eq!(find("a=1;sms-checker-uid=abc123;b=2"), Some("abc123"));
    assert_eq!(find("  sms-checker-uid = abc123 ;"), Some("abc123"));
    assert_eq!(find("sms-checker-uid=\"abc123\""), Some("abc123"));
}

#[test]
fn absent_or_similar_names_do_not_match() {
    assert_eq!(find(""), None);
    assert_eq!(find("a=1; b=2"), None);
    assert_eq!(find("x-sms-checker-uid=abc; sms-checker-uid2=def"), None);
    assert_eq!(find("SMS-CHECKER-UID=abc"), None);
}

#[test]
fn malformed_values_are_skipped() {
    for header in [
        "sms-checker-uid",
        "sms-checker-uid=",
        "sms-checker-uid=\"\"",
        "sms-checker-uid=a b",
        "sms-checker-uid=abc;def=",
        "sms-checker-uid=ab%20c",
        "sms-checker-uid=\u{e9}t\u{e9}",
        "sms-checker-uid=a=b",
        "=abc",
        ";;;;",
    ] {
        let got = find(header);
        assert!(
            got.is_none() || got == Some("abc"),
            "{header:?} gave {got:?}"
        );
    }
    assert_eq!(find("sms-checker-uid=a b"), None);
    assert_eq!(find("sms-checker-uid=\"abc"), None);
}

#[test]
fn duplicates_take_the_first_valid_value() {
    assert_eq!(
        find("sms-checker-uid=first; sms-checker-uid=second"),
        Some("first")
    );
    assert_eq!(
        find("sms-checker-uid=bad value; sms-checker-uid=good"),
        Some("good")
    );
    assert_eq!(find("sms-checker-uid=; sms-checker-uid=good"), Some("good"));
}

#[test]
fn oversized_values_and_headers() {
    let max = "a".repeat(MAX_ID_LEN);
    assert_eq!(find(&format!("sms-checker-uid={max}")), Some(max.as_str()));
    let over = "a".repeat(MAX_ID_LEN + 1);
    assert_eq!(find(&format!("sms-checker-uid={over}")), None);
    // A 1 MB header with the cookie at the very end is still parsed.
    let filler = "x=1; ".repeat(200_000);
    assert_eq!(find(&format!("{filler}sms-checker-uid=tail")), Some("tail"));
    let huge = "y".repeat(1 << 20);
    assert_eq!(find(&format!("sms-checker-uid={huge}")), None);
}

#[test]
fn non_utf8_bytes_are_handled() {
    let header = b"sms-checker-uid=\xff\xfe; other=\x80";
    assert_eq!(find_cookie(header, NAME), None);
    let header = b"\xff=\xff; sms-checker-uid=ok";
    assert_eq!(find_cookie(header, NAME), Some(&b"ok"[..]));
}

#[test]
fn cookie_ids_are_validated() {
    assert!(is_valid_cookie_id(b"0123456789abcdef0123456789abcdef"));
    assert!(is_valid_cookie_id(b"A-b_9"));
    assert!(!is_valid_cookie_id(b""));
    assert!(!is_valid_cookie_id(b"a.b"));
    assert!(!is_valid_cookie_id(b"a/b"));
}

#[test]
fn user_id_header_values() {
    assert_eq!(
        user_id_from_header(b"  alice@example.com "),
        Some(&b"alice@example.com"[..])
    );
    assert_eq!(user_id_from_header(b""), None);
    assert_eq!(user_id_from_header(b"   "), None);
    assert_eq!(user_id_from_header(b"a b"), None);
    assert_eq!(user_id_from_header(b"a\tb"), None);
    assert_eq!(user_id_from_header(b"caf\xc3\xa9"), None);
    assert_eq!(
        user_id_from_header("u".repeat(MAX_ID_LEN + 1).as_bytes()),
        None
    );
    assert!(user_id_from_header("u".repeat(MAX_ID_LEN).as_bytes()).is_some());
}

#[test]
fn set_cookie_carries_the_attributes() {
    let plain = SetCookie::new(&CookieConfig {
        name: "sms-checker-uid".into(),
        max_age_seconds: 2_592_000,
        secure: false,
    });
    assert_eq!(
        plain.header_value("abc"),
        "sms-checker-uid=abc; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"
    );
    let secure = SetCookie::new(&CookieConfig {
        name: "uid".into(),
        max_age_seconds: 60,
        secure: true,
    });
    assert_eq!(
        secure.header_value("x"),
        "uid=x; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
    );
}

#[test]
fn new_ids_are_random_hex_that_the_cookie_parser_accepts() {
    let a = new_id().unwrap();
    let b = new_id().unwrap();
    assert_ne!(a, b);
    for id in [a, b, id_from_seed(1, 2)] {
        assert_eq!(id.len(), NEW_ID_LEN);
        assert!(
            id.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        );
        let header = format!("sms-checker-uid={}", std::str::from_utf8(&id).unwrap());
        assert_eq!(find_cookie(header.as_bytes(), NAME), Some(&id[..]));
    }
    assert_ne!(id_from_seed(1, 2), id_from_seed(1, 3));
    assert_eq!(id_from_seed(7, 9), id_from_seed(7, 9));
}
