//! The user-id cookie: finding it in a `Cookie` header, checking that its
//! value is an id this filter could have issued, and building `Set-Cookie`.

use crate::config::CookieConfig;

/// Longest id accepted from a cookie or a user-id header. Anything longer is
/// not ours and would only make hashing a client-controlled cost.
pub const MAX_ID_LEN: usize = 128;

/// Length of a freshly issued id: 128 random bits in lowercase hex.
pub const NEW_ID_LEN: usize = 32;

/// A value we accept as a user id from a cookie: 1-128 bytes of
/// `[A-Za-z0-9_-]` (our own ids are 32 lowercase hex digits).
pub fn is_valid_cookie_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A value we accept as a user id from the configured header: 1-128 bytes of
/// visible ASCII, after trimming spaces.
pub fn user_id_from_header(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    (!value.is_empty() && value.len() <= MAX_ID_LEN && value.iter().all(u8::is_ascii_graphic))
        .then_some(value)
}

/// The first valid value of cookie `name` in a `Cookie` header.
///
/// A header may hold the same name several times (a cookie set for two paths
/// or domains); browsers send the most specific first, so the first valid one
/// wins and malformed ones are skipped rather than trusted.
pub fn find_cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        if key.trim_ascii() != name {
            return None;
        }
        let value = value.trim_ascii();
        // RFC 6265 allows a double-quoted value.
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        is_valid_cookie_id(value).then_some(value)
    })
}

/// The parts of `Set-Cookie` around the id, built once per config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    prefix: String,
    suffix: String,
}

impl SetCookie {
    pub fn new(config: &CookieConfig) -> SetCookie {
        let secure = if config.secure { "; Secure" } else { "" };
        SetCookie {
            prefix: format!("{}=", config.name),
            suffix: format!(
                "; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
                config.max_age_seconds
            ),
        }
    }

    /// The `Set-Cookie` value for `id`.
    pub fn header_value(&self, id: &str) -> String {
        let mut value = String::with_capacity(self.prefix.len() + id.len() + self.suffix.len());
        value.push_str(&self.prefix);
        value.push_str(id);
        value.push_str(&self.suffix);
        value
    }
}

/// A fresh random id from the platform's secure source (WASI `random_get`
/// inside Envoy). `None` if the source fails, which the caller must handle.
pub fn new_id() -> Option<[u8; NEW_ID_LEN]> {
    let mut raw = [0u8; NEW_ID_LEN / 2];
    getrandom::fill(&mut raw).ok()?;
    Some(hex_lower(&raw))
}

fn hex_lower(raw: &[u8; NEW_ID_LEN / 2]) -> [u8; NEW_ID_LEN] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; NEW_ID_LEN];
    for (i, b) in raw.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

/// An id derived from a seed, for when the random source is unavailable.
pub fn id_from_seed(seed: u64, counter: u64) -> [u8; NEW_ID_LEN] {
    let mut raw = [0u8; NEW_ID_LEN / 2];
    let hi = xxhash_rust::xxh3::xxh3_64_with_seed(&counter.to_le_bytes(), seed);
    let lo = xxhash_rust::xxh3::xxh3_64_with_seed(&seed.to_le_bytes(), counter);
    raw[..8].copy_from_slice(&hi.to_le_bytes());
    raw[8..].copy_from_slice(&lo.to_le_bytes());
    hex_lower(&raw)
}
