//! Batches the codec tests and the fuzzer start from.

use watchpost_fleet_protocol::*;

/// A batch of `n` records from sequence number `first`: events, outcomes and acknowledgements in turn.
pub fn sample(first: u64, n: u64) -> Batch {
    let mut records = Vec::new();
    for seq in first..first + n {
        records.push(match seq % 3 {
            0 => Record::Outcome(OutcomeRecord {
                seq,
                event: seq - 1,
                action: "siem".into(),
                filter: "av".into(),
                at_ms: 1_700_000_000_000,
                attempt: 1,
                ok: true,
                detail: String::new(),
            }),
            1 => Record::Event(EventRecord {
                seq,
                id: seq,
                time_ms: Some(1_700_000_000_000),
                stored_ms: 1_700_000_000_001,
                source: "sep-av".into(),
                host: "pc1".into(),
                filters: vec!["av-detection".into()],
                anomaly: seq.is_multiple_of(2),
                anomaly_why: Some("new value \"x\" for key \"y\"".into()),
                needs_ack: true,
                fields: Fields(vec![
                    ("risk_name".into(), "EICAR Test String".into()),
                    ("path".into(), "C:\\temp\\eicar.com".into()),
                ]),
                raw: "Virus found,IP Address: 10.0.0.1".into(),
                origin: Some("05292019.Log:120".into()),
            }),
            _ => Record::Ack(AckRecord {
                seq,
                event: seq - 1,
                at_ms: 1_700_000_000_500,
                by: "alice".into(),
                comment: "known".into(),
            }),
        });
    }
    Batch {
        stream: "s-1".into(),
        first_seq: first,
        last_seq: first + n - 1,
        records,
    }
}
