//! Bodies on the wire: gzip or plain JSON, read with limits, batches validated.

use std::borrow::Cow;
use std::io::{Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Batch, Record};

/// What the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body as sent (compressed), in bytes.
    pub max_body: usize,
    /// Largest body after decompression, in bytes.
    pub max_decompressed: usize,
    /// Most records in one batch.
    pub max_records: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 8 << 20,
            max_decompressed: 64 << 20,
            max_records: 20_000,
        }
    }
}

/// A body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Plain.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
}

impl Encoding {
    /// From the header's value (none: plain).
    pub fn from_header(value: Option<&str>) -> Result<Encoding, DecodeError> {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(Encoding::Identity),
            Some(v) if v.is_empty() || v == "identity" => Ok(Encoding::Identity),
            Some(v) if v == "gzip" || v == "x-gzip" => Ok(Encoding::Gzip),
            Some(v) => Err(DecodeError::Encoding(v.chars().take(40).collect())),
        }
    }
}

/// Why a body was refused. Each maps to a 4xx status ([`DecodeError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body as sent is over [`Limits::max_body`].
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body decompresses to more than [`Limits::max_decompressed`].
    #[error("the body decompresses to more than {limit} bytes")]
    TooLargeDecompressed {
        /// The limit.
        limit: usize,
    },
    /// A `Content-Encoding` other than gzip.
    #[error("unsupported Content-Encoding `{0}`: send gzip or plain JSON")]
    Encoding(String),
    /// Broken gzip.
    #[error("the body is not valid gzip: {0}")]
    Compression(String),
    /// Not the JSON expected (with line and column).
    #[error("the body is not a valid request: {0}")]
    Json(String),
    /// Valid JSON, but not a valid batch.
    #[error("invalid batch: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            DecodeError::TooLarge { .. } | DecodeError::TooLargeDecompressed { .. } => 413,
            DecodeError::Encoding(_) => 415,
            _ => 400,
        }
    }

    /// The [`crate::ApiError::code`].
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } | DecodeError::TooLargeDecompressed { .. } => "too_large",
            DecodeError::Encoding(_) => "unsupported_encoding",
            DecodeError::Compression(_) => "bad_compression",
            DecodeError::Json(_) => "bad_json",
            DecodeError::Invalid(_) => "bad_batch",
        }
    }
}

/// The body as plain bytes: checked against [`Limits::max_body`], gunzipped up to
/// [`Limits::max_decompressed`] (a gzip bomb stops there).
pub fn decompress<'a>(
    body: &'a [u8],
    encoding: Encoding,
    limits: &Limits,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    if body.len() > limits.max_body {
        return Err(DecodeError::TooLarge {
            limit: limits.max_body,
        });
    }
    match encoding {
        Encoding::Identity => {
            if body.len() > limits.max_decompressed {
                return Err(DecodeError::TooLargeDecompressed {
                    limit: limits.max_decompressed,
                });
            }
            Ok(Cow::Borrowed(body))
        }
        Encoding::Gzip => {
            let mut out = Vec::with_capacity((body.len() * 4).min(limits.max_decompressed));
            flate2::read::GzDecoder::new(body)
                .take(limits.max_decompressed as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| DecodeError::Compression(e.to_string()))?;
            if out.len() > limits.max_decompressed {
                return Err(DecodeError::TooLargeDecompressed {
                    limit: limits.max_decompressed,
                });
            }
            Ok(Cow::Owned(out))
        }
    }
}

/// A JSON body of type `T`, decompressed with the limits.
pub fn decode_json<T: DeserializeOwned>(
    body: &[u8],
    encoding: Encoding,
    limits: &Limits,
) -> Result<T, DecodeError> {
    let plain = decompress(body, encoding, limits)?;
    serde_json::from_slice(&plain).map_err(|e| DecodeError::Json(e.to_string()))
}

/// A batch from the network: decompressed and parsed with the limits, then validated
/// ([`Batch::validate`]).
pub fn decode_batch(
    body: &[u8],
    encoding: Encoding,
    limits: &Limits,
) -> Result<Batch, DecodeError> {
    let mut batch: Batch = decode_json(body, encoding, limits)?;
    batch.validate(limits)?;
    Ok(batch)
}

/// `value` as JSON, gzip-compressed when asked.
pub fn encode_json<T: Serialize>(value: &T, gzip: bool) -> Vec<u8> {
    // Serializing our own types into memory cannot fail (string keys, no I/O).
    let json = serde_json::to_vec(value).unwrap_or_default();
    if !gzip {
        return json;
    }
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(&json);
    enc.finish().unwrap_or_default()
}

/// A batch as the agent sends it: JSON, gzip-compressed.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    encode_json(batch, true)
}

fn invalid(m: String) -> DecodeError {
    DecodeError::Invalid(m)
}

/// Replaces NUL characters (PostgreSQL's text cannot hold them) with U+FFFD.
fn clean(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

impl Batch {
    /// Checks what serde cannot: the stream's name, the sequence range, record order and
    /// count; replaces NUL characters in text (PostgreSQL refuses them) with U+FFFD.
    pub fn validate(&mut self, limits: &Limits) -> Result<(), DecodeError> {
        if self.stream.is_empty()
            || self.stream.len() > 64
            || !self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "`stream` must be 1-64 letters, digits, `-` or `_`".into(),
            ));
        }
        if self.first_seq == 0 || self.last_seq < self.first_seq {
            return Err(invalid(format!(
                "sequence range {}..={} is empty or starts at 0",
                self.first_seq, self.last_seq
            )));
        }
        if self.last_seq >= 1 << 62 {
            return Err(invalid("sequence numbers must stay below 2^62".into()));
        }
        if self.records.len() > limits.max_records {
            return Err(invalid(format!(
                "{} records; at most {} per batch",
                self.records.len(),
                limits.max_records
            )));
        }
        let mut prev = self.first_seq - 1;
        for (i, r) in self.records.iter_mut().enumerate() {
            let seq = r.seq();
            if seq <= prev || seq > self.last_seq {
                return Err(invalid(format!(
                    "record {i}: sequence number {seq} is not after {prev} within {}..={}",
                    self.first_seq, self.last_seq
                )));
            }
            prev = seq;
            match r {
                Record::Event(e) => {
                    if e.id == 0 || e.id >= 1 << 62 {
                        return Err(invalid(format!(
                            "record {i}: event id {} out of range",
                            e.id
                        )));
                    }
                    clean(&mut e.source);
                    clean(&mut e.host);
                    clean(&mut e.raw);
                    e.filters.iter_mut().for_each(clean);
                    e.anomaly_why.iter_mut().for_each(clean);
                    e.origin.iter_mut().for_each(clean);
                    for (k, v) in &mut e.fields.0 {
                        clean(k);
                        clean(v);
                    }
                }
                Record::Outcome(o) => {
                    if o.event >= 1 << 62 {
                        return Err(invalid(format!("record {i}: event id out of range")));
                    }
                    clean(&mut o.action);
                    clean(&mut o.filter);
                    clean(&mut o.detail);
                }
                Record::Ack(a) => {
                    if a.event >= 1 << 62 {
                        return Err(invalid(format!("record {i}: event id out of range")));
                    }
                    clean(&mut a.by);
                    clean(&mut a.comment);
                }
            }
        }
        Ok(())
    }
}

/// The fuzz target (`fuzz/fuzz_targets/batch.rs`, and `tests/fuzz.rs` on stable): any
/// bytes, read as plain and as gzip, must give a valid batch or an error, never a panic,
/// and a decoded batch must hold what [`Batch::validate`] promises.
pub fn fuzz_batch(data: &[u8]) {
    let limits = Limits {
        max_body: 1 << 20,
        max_decompressed: 4 << 20,
        max_records: 1000,
    };
    for enc in [Encoding::Identity, Encoding::Gzip] {
        match decode_batch(data, enc, &limits) {
            Ok(b) => {
                assert!(b.first_seq >= 1 && b.first_seq <= b.last_seq);
                assert!(b.records.len() <= limits.max_records);
                assert!(b.records.windows(2).all(|w| w[0].seq() < w[1].seq()));
                assert!(
                    b.records
                        .iter()
                        .all(|r| (b.first_seq..=b.last_seq).contains(&r.seq()))
                );
                // What was decoded encodes and decodes to itself.
                let again = decode_batch(&encode_batch(&b), Encoding::Gzip, &Limits::default());
                assert_eq!(again.as_ref().ok(), Some(&b));
            }
            Err(e) => {
                assert!((400..500).contains(&e.status()));
            }
        }
    }
}
