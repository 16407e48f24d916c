//! The batch codec: round trips, every limit, and hostile bodies refused with a clear 4xx.

#![allow(clippy::unwrap_used)]

use watchpost_fleet_protocol::*;

mod common;
use common::sample;

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn batches_round_trip_compressed_and_plain() {
    let b = sample(1, 10);
    let z = encode_batch(&b);
    assert_eq!(decode_batch(&z, Encoding::Gzip, &limits()).unwrap(), b);
    let plain = encode_json(&b, false);
    assert!(z.len() < plain.len());
    assert_eq!(
        decode_batch(&plain, Encoding::Identity, &limits()).unwrap(),
        b
    );
}

#[test]
fn limits_are_enforced_before_and_after_decompression() {
    let b = sample(1, 300);
    let plain = encode_json(&b, false);
    let small = Limits {
        max_body: 100,
        ..limits()
    };
    let e = decode_batch(&plain, Encoding::Identity, &small).unwrap_err();
    assert_eq!((e.status(), e.code()), (413, "too_large"));
    // A gzip bomb: 100 MB of zeros compress to ~100 KB; reading stops at the limit.
    let bomb = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..100 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap()
    };
    assert!(bomb.len() < 1 << 20);
    let e = decode_batch(&bomb, Encoding::Gzip, &limits()).unwrap_err();
    assert_eq!(e, DecodeError::TooLargeDecompressed { limit: 64 << 20 });
    let few = Limits {
        max_records: 10,
        ..limits()
    };
    let e = decode_batch(&plain, Encoding::Identity, &few).unwrap_err();
    assert!(e.to_string().contains("at most 10 per batch"), "{e}");
}

#[test]
fn malformed_batches_get_clear_errors() {
    let enc = |b: &Batch| encode_json(b, false);
    let mut b = sample(5, 3);
    b.records.swap(0, 1);
    let e = decode_batch(&enc(&b), Encoding::Identity, &limits()).unwrap_err();
    assert!(e.to_string().contains("record 1: sequence number 5"), "{e}");
    let mut b = sample(5, 3);
    b.last_seq = 6;
    assert!(decode_batch(&enc(&b), Encoding::Identity, &limits()).is_err());
    let mut b = sample(1, 1);
    b.first_seq = 0;
    assert!(decode_batch(&enc(&b), Encoding::Identity, &limits()).is_err());
    let mut b = sample(1, 1);
    b.stream = "a b".into();
    assert!(decode_batch(&enc(&b), Encoding::Identity, &limits()).is_err());
    for (body, code) in [
        (&b"{"[..], "bad_json"),
        (b"[]", "bad_json"),
        (
            br#"{"stream":"s","first_seq":1,"last_seq":1,"records":[],"extra":1}"#,
            "bad_json",
        ),
        (
            br#"{"stream":"s","first_seq":1,"last_seq":1,"records":[{"kind":"event","seq":1}]}"#,
            "bad_json",
        ),
        (
            br#"{"stream":"s","first_seq":1,"last_seq":1,"records":[{"kind":"nope","seq":1}]}"#,
            "bad_json",
        ),
    ] {
        let e = decode_batch(body, Encoding::Identity, &limits()).unwrap_err();
        assert_eq!(e.code(), code, "{}: {e}", String::from_utf8_lossy(body));
        assert_eq!(e.status(), 400);
    }
    let e = decode_batch(b"not gzip", Encoding::Gzip, &limits()).unwrap_err();
    assert_eq!(e.code(), "bad_compression");
    let e = Encoding::from_header(Some("br")).unwrap_err();
    assert_eq!(e.status(), 415);
    // Fields must be strings.
    let body = br#"{"stream":"s","first_seq":1,"last_seq":1,"records":[{"kind":"event","seq":1,"id":1,"stored_ms":0,"source":"a","host":"h","filters":[],"fields":{"a":1},"raw":""}]}"#;
    let e = decode_batch(body, Encoding::Identity, &limits()).unwrap_err();
    assert!(e.to_string().contains("string"), "{e}");
}

#[test]
fn nul_characters_become_replacement_characters_and_gaps_are_allowed() {
    let body = br#"{"stream":"s","first_seq":3,"last_seq":9,"records":[{"kind":"event","seq":4,"id":1,"stored_ms":0,"source":"a\u0000b","host":"h","filters":[],"fields":{"k\u0000":"v\u0000"},"raw":"x\u0000"}]}"#;
    let b = decode_batch(body, Encoding::Identity, &limits()).unwrap();
    let Record::Event(e) = &b.records[0] else {
        panic!()
    };
    assert_eq!(e.source, "a\u{FFFD}b");
    assert_eq!(e.fields.0[0], ("k\u{FFFD}".into(), "v\u{FFFD}".into()));
    assert_eq!(e.raw, "x\u{FFFD}");
    // Duplicate field names keep the first value.
    let body = br#"{"stream":"s","first_seq":1,"last_seq":1,"records":[{"kind":"event","seq":1,"id":1,"stored_ms":0,"source":"a","host":"h","filters":[],"fields":{"k":"1","k":"2"},"raw":""}]}"#;
    let b = decode_batch(body, Encoding::Identity, &limits()).unwrap();
    let Record::Event(e) = &b.records[0] else {
        panic!()
    };
    assert_eq!(e.fields.0, [("k".to_string(), "1".to_string())]);
}

#[test]
fn secrets_are_hidden_from_debug_output() {
    let r = EnrollRequest {
        secret: "wpe_topsecret".into(),
        host_id: "h".into(),
        hostname: "pc".into(),
        os: "linux".into(),
        version: "0".into(),
    };
    assert!(!format!("{r:?}").contains("topsecret"));
}
