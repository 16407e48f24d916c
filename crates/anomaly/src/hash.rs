//! Fixed-seed fingerprints and the field-list encoding shared by hashing and storage.
//!
//! Every hash is XXH3-64 (a published, versioned algorithm) with constant seeds, so a
//! fingerprint computed today matches the one stored in a baseline file years ago. Field
//! lists are hashed and stored in one encoding: for each field its length as a 32-bit
//! little-endian integer, then its UTF-8 bytes. Lengths make `["ab", "c"]` and `["a", "bc"]`
//! different.

use xxhash_rust::xxh3::xxh3_64_with_seed;

const SEED_HOST: u64 = 0x7770_6873_745f_0001;
const SEED_SCOPE: u64 = 0x7770_6b65_795f_0002;
const SEED_VALUE: u64 = 0x7770_7661_6c5f_0003;
const SEED_PAIR: u64 = 0x7770_7061_6972_0004;

/// Appends the length-prefixed encoding of `fields` to `out`.
pub(crate) fn encode_into<S: AsRef<str>>(out: &mut Vec<u8>, fields: &[S]) {
    for f in fields {
        let f = f.as_ref().as_bytes();
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
}

/// The length-prefixed encoding of `fields`.
pub(crate) fn encode<S: AsRef<str>>(fields: &[S]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.as_ref().len() + 4).sum());
    encode_into(&mut out, fields);
    out
}

/// Decodes [`encode`]'s output; `None` if the bytes are not such an encoding.
pub(crate) fn decode(mut bytes: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let s = bytes.get(4..4 + len)?;
        out.push(String::from_utf8(s.to_vec()).ok()?);
        bytes = &bytes[4 + len..];
    }
    Some(out)
}

/// Hashes a prefix and a field list without allocating for ordinary sizes.
fn hash_fields<S: AsRef<str>>(prefix: &[u8], fields: &[S], seed: u64) -> u64 {
    let len: usize = prefix.len() + fields.iter().map(|f| f.as_ref().len() + 4).sum::<usize>();
    if len <= 512 {
        let mut buf = [0u8; 512];
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut at = prefix.len();
        for f in fields {
            let f = f.as_ref().as_bytes();
            buf[at..at + 4].copy_from_slice(&(f.len() as u32).to_le_bytes());
            buf[at + 4..at + 4 + f.len()].copy_from_slice(f);
            at += 4 + f.len();
        }
        xxh3_64_with_seed(&buf[..at], seed)
    } else {
        let mut v = prefix.to_vec();
        encode_into(&mut v, fields);
        xxh3_64_with_seed(&v, seed)
    }
}

/// The (filter, host) fingerprint: names one learning clock.
pub(crate) fn host_fp(filter: &str, host: &str) -> u64 {
    hash_fields(&[], &[filter, host], SEED_HOST)
}

/// The (filter, host, key) fingerprint: names one key's set of values.
pub(crate) fn scope_fp<S: AsRef<str>>(host_fp: u64, key: &[S]) -> u64 {
    hash_fields(&host_fp.to_le_bytes(), key, SEED_SCOPE)
}

/// The fingerprint of a value (one or more fields).
pub(crate) fn value_fp<S: AsRef<str>>(value: &[S]) -> u64 {
    hash_fields(&[], value, SEED_VALUE)
}

/// The pair fingerprint the in-memory set holds. Never 0 (0 marks an empty slot).
pub(crate) fn pair_fp(scope: u64, value: u64) -> u64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&scope.to_le_bytes());
    b[8..].copy_from_slice(&value.to_le_bytes());
    xxh3_64_with_seed(&b, SEED_PAIR).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_separates_fields() {
        let e = encode(&["ab", "", "ü"]);
        assert_eq!(decode(&e).unwrap(), vec!["ab", "", "ü"]);
        assert_ne!(value_fp(&["ab", "c"]), value_fp(&["a", "bc"]));
        assert_eq!(decode(&[1, 0, 0]), None);
        let long = "x".repeat(600);
        assert_eq!(value_fp(&[long.as_str()]), {
            let mut v = Vec::new();
            encode_into(&mut v, &[long.as_str()]);
            xxh3_64_with_seed(&v, SEED_VALUE)
        });
    }

    #[test]
    fn fingerprints_are_stable() {
        // These constants are stored in baseline files: they must never change.
        let got = [
            host_fp("rdp", "ws1"),
            scope_fp(7, &["alice"]),
            value_fp(&["10.0.0.1"]),
            pair_fp(1, 2),
        ];
        assert_eq!(
            got,
            [
                0x9bbb_4795_750f_6b71,
                0xc74f_1036_80c7_f1e7,
                0x12df_0931_b1b5_07a4,
                0xe731_de05_a89d_453a
            ]
        );
    }
}
