//! Envoy's serialized header map, as `proxy_get_header_map_pairs` returns it:
//! a little-endian `u32` count, then a `u32` name length and a `u32` value
//! length per pair, then each name and value followed by a NUL byte.
//!
//! Reading the whole map once costs one host call, where reading three
//! headers one by one costs three (each with a call back into the module to
//! allocate). Parsing is bounds-checked: a malformed buffer yields no pairs
//! rather than a panic.

/// The pairs of a serialized header map, borrowed from `bytes`; empty if the
/// buffer is malformed.
pub fn parse(bytes: &[u8]) -> Vec<(&[u8], &[u8])> {
    parse_checked(bytes).unwrap_or_default()
}

fn parse_checked(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = u32_at(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    // Each pair needs at least 10 bytes: two lengths and two NULs.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut take = |len: usize| -> Option<&[u8]> {
        let end = data.checked_add(len)?;
        let field = bytes.get(data..end)?;
        if bytes.get(end) != Some(&0) {
            return None;
        }
        data = end + 1;
        Some(field)
    };
    for i in 0..count {
        let name_len = u32_at(4 + i * 8)?;
        let value_len = u32_at(8 + i * 8)?;
        let name = take(name_len)?;
        let value = take(value_len)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// The first value of header `name` (names are lower-case in Envoy).
pub fn first<'a>(pairs: &[(&'a [u8], &'a [u8])], name: &str) -> Option<&'a [u8]> {
    pairs
        .iter()
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| *v)
}

/// Every value of header `name`, in order.
pub fn all<'a, 'p>(
    pairs: &'p [(&'a [u8], &'a [u8])],
    name: &'p str,
) -> impl Iterator<Item = &'a [u8]> + 'p {
    pairs
        .iter()
        .filter(move |(n, _)| *n == name.as_bytes())
        .map(|(_, v)| *v)
}

/// Serializes pairs the way the host does (for tests and fuzzing).
pub fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}
