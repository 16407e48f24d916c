//! The binary `COPY` rows the server writes (`copy.rs`) read back from a real PostgreSQL
//! as the values they were made from; the full-text vector equals what PostgreSQL's own
//! `tsvector` input makes of the same words in order (so phrases and prefixes match as
//! they did when the server sent text).

#![allow(clippy::unwrap_used)]

use futures_util::SinkExt;
use jiff::Timestamp;
use watchpost_pgtest::{Cluster, Options};
use watchpost_server::copy::{CopyWriter, MAX_INDEX_BYTES, MAX_POSITION, MAX_WORD};

/// The words in order as a `tsvector` text literal (what PostgreSQL parses, merges and
/// sorts itself).
fn literal(values: &[(String, String)], host: &str, raw: &str) -> String {
    let mut out = String::new();
    let mut pos = 0usize;
    let mut bytes = 0usize;
    let texts = values.iter().map(|(_, v)| v.as_str()).chain([host, raw]);
    'outer: for text in texts {
        for word in watchpost_query::index_words(text) {
            pos += 1;
            if pos > MAX_POSITION || bytes + word.len() > MAX_INDEX_BYTES {
                break 'outer;
            }
            if word.len() > MAX_WORD {
                continue;
            }
            bytes += word.len();
            if !out.is_empty() {
                out.push(' ');
            }
            out.push('\'');
            for c in word.chars() {
                if c == '\'' || c == '\\' {
                    out.push(c);
                }
                out.push(c);
            }
            out.push_str(&format!("':{pos}"));
        }
    }
    out
}

/// An event's values, host and raw record.
type Case = (Vec<(String, String)>, String, String);

#[test]
fn copied_rows_read_back_as_written() {
    let Some(pg) = Cluster::start_or_skip(Options::default()) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases: Vec<Case> = vec![
        (
            vec![
                ("path".into(), r"C:\Users\O'Brien\Mimikatz.EXE".into()),
                ("user".into(), "Ærøskøbing Straße ñandú".into()),
            ],
            "PC-1".into(),
            r#"Virus found, "quoted" \ back\slash mimikatz.exe run run"#.into(),
        ),
        (vec![], "h".into(), "x ".repeat(20_000)),
        (
            vec![("long".into(), format!("{} tail", "z".repeat(3000)))],
            "h".into(),
            String::new(),
        ),
        (vec![], String::new(), String::new()),
        (
            vec![("n".into(), "日本語 テキスト 123abc ABC123".into())],
            "host".into(),
            "1.2.3.4:445 -> 10.0.0.1".into(),
        ),
    ];
    let when: Timestamp = "2026-11-20T13:14:15.123456Z".parse().unwrap();
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(
                "CREATE TABLE t (n int8, i int4, b bool, s text, maybe text, at timestamptz,
                                 none timestamptz, arr text[], empty text[], j jsonb, v tsvector)",
            )
            .await
            .unwrap();
        let mut w = CopyWriter::new();
        for (n, (values, host, raw)) in cases.iter().enumerate() {
            w.row(11);
            w.int8(-(n as i64) - (1 << 40));
            w.int4(n as i32);
            w.bool(n % 2 == 0);
            w.text(host);
            w.opt_text(None);
            w.timestamptz(when);
            w.opt_timestamptz(None);
            w.text_array(["a", "B c", "ü"].into_iter());
            w.text_array(std::iter::empty());
            w.jsonb(r#"{"k":"v\"","n":"ü"}"#);
            w.tsvector(values, host, raw);
        }
        let tx = client.transaction().await.unwrap();
        let sink = tx
            .copy_in::<_, bytes::Bytes>("COPY t FROM STDIN (FORMAT binary)")
            .await
            .unwrap();
        let mut sink = std::pin::pin!(sink);
        sink.send(bytes::Bytes::from(w.finish())).await.unwrap();
        assert_eq!(sink.finish().await.unwrap(), cases.len() as u64);
        tx.commit().await.unwrap();
        let rows = client
            .query(
                "SELECT n, i, b, s, maybe, at, none, arr, empty, j::text FROM t ORDER BY i",
                &[],
            )
            .await
            .unwrap();
        for (n, r) in rows.iter().enumerate() {
            assert_eq!(r.get::<_, i64>(0), -(n as i64) - (1 << 40));
            assert_eq!(r.get::<_, i32>(1), n as i32);
            assert_eq!(r.get::<_, bool>(2), n % 2 == 0);
            assert_eq!(r.get::<_, String>(3), cases[n].1);
            assert_eq!(r.get::<_, Option<String>>(4), None);
            assert_eq!(r.get::<_, Timestamp>(5), when);
            assert_eq!(r.get::<_, Option<Timestamp>>(6), None);
            assert_eq!(r.get::<_, Vec<String>>(7), ["a", "B c", "ü"]);
            assert!(r.get::<_, Vec<String>>(8).is_empty());
            assert_eq!(r.get::<_, String>(9), r#"{"k": "v\"", "n": "ü"}"#);
        }
        for (n, (values, host, raw)) in cases.iter().enumerate() {
            let lit = literal(values, host, raw);
            let same: bool = client
                .query_one(
                    "SELECT v = $1::text::tsvector FROM t WHERE i = $2",
                    &[&lit, &(n as i32)],
                )
                .await
                .unwrap()
                .get(0);
            assert!(same, "case {n}: the vector differs from {lit:.200}");
        }
        // Phrases and prefixes find what they should.
        let found: i64 = client
            .query_one(
                "SELECT count(*) FROM t WHERE v @@ $1::text::tsquery AND v @@ $2::text::tsquery",
                &[&"'mimikatz' <-> 'exe' <-> 'run'", &"'slas':*"],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 1);
    });
}
