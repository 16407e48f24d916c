//! One rule file as the compiled-rule cache keeps it: what loading needs to file its
//! rules in the index without compiling them (a leaf module: plain data, encoded as one
//! line of text).
//!
//! An entry says, per document, what loading a rule would decide: why a document is
//! not loaded, or a detection rule's metadata, the targets of its compiled forms with
//! their prefilter keys (channels, event ids, providers), their needles and the fields
//! they read. The detection itself is kept as JSON and compiled at the first event that
//! reaches one of the rule's forms as a candidate. An entry is written only after every
//! document of the file was compiled (or refused), so a rule an entry lists is known to
//! compile; what the run's options decide (`status`, excluded ids) is kept apart and
//! decided again at each load.
//!
//! The line: the entry's metadata as compact JSON, then each *segment* (a JSON value
//! loaded only when needed: a detection, or a whole document prepared at load) after a
//! tab. Compact JSON never holds a raw tab, so the segments are found without parsing
//! what is before them.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// A rule file's entry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FileEntry {
    /// Its documents, in order.
    #[serde(rename = "d")]
    Docs(Vec<DocEntry>),
    /// Why its YAML could not be read.
    #[serde(rename = "e")]
    Error(String),
}

/// One document of a rule file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DocEntry {
    /// Not loaded whatever the options say (not a mapping, `action`, no title).
    #[serde(rename = "r")]
    Refused {
        #[serde(rename = "t")]
        title: Option<String>,
        #[serde(rename = "w")]
        reason: String,
    },
    /// A document with a title: what the options decide on (`status`, `id`), then the
    /// rest.
    #[serde(rename = "d")]
    Doc {
        #[serde(rename = "t")]
        title: String,
        #[serde(rename = "i")]
        id: Option<String>,
        #[serde(rename = "s")]
        status: Option<String>,
        #[serde(rename = "b")]
        body: Body,
    },
}

/// What a titled document is, once the options let it load.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Body {
    /// The whole document is segment `n`, prepared when loaded: correlations, filters,
    /// deprecated aggregations (few, and cheap or joined to others), and documents the
    /// options of the run that wrote the entry did not load (not compiled then: a run
    /// that loads such a rule compiles its file again for a new entry).
    #[serde(rename = "j")]
    Json(usize),
    /// Not loaded, with the reason compiling it gave.
    #[serde(rename = "r")]
    Refused(String),
    /// A detection rule that compiles.
    #[serde(rename = "rule")]
    Rule(Box<RuleEntry>),
}

/// A detection rule that compiles: its metadata, its compiled forms' keys and needles.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RuleEntry {
    #[serde(rename = "n")]
    pub(crate) name: Option<String>,
    #[serde(rename = "l")]
    pub(crate) level: String,
    #[serde(rename = "g")]
    pub(crate) tags: Vec<String>,
    #[serde(rename = "p")]
    pub(crate) product: Option<String>,
    #[serde(rename = "c")]
    pub(crate) category: Option<String>,
    #[serde(rename = "s")]
    pub(crate) service: Option<String>,
    #[serde(rename = "x")]
    pub(crate) description: Option<String>,
    /// The segment holding the detection mapping.
    #[serde(rename = "d")]
    pub(crate) detection: usize,
    /// The fields its forms read, in the rule's slot order: (field, System field read
    /// when the event lacks it).
    #[serde(rename = "f")]
    pub(crate) slots: Vec<(String, Option<String>)>,
    #[serde(rename = "v")]
    pub(crate) forms: Vec<FormEntry>,
}

/// One compiled form of a rule: its logsource target and what the index needs.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FormEntry {
    /// Index into the rule's logsource targets.
    #[serde(rename = "t")]
    pub(crate) target: usize,
    /// Channels as written (`None`: any).
    #[serde(rename = "c")]
    pub(crate) channels: Option<Vec<String>>,
    /// Event ids it is filed under (`None`: any).
    #[serde(rename = "i")]
    pub(crate) event_ids: Option<Vec<i64>>,
    /// Providers its detection pins, lowercased.
    #[serde(rename = "p")]
    pub(crate) providers: Option<Vec<String>>,
    /// Event ids the logsource implies.
    #[serde(rename = "l")]
    pub(crate) target_ids: Option<Vec<i64>>,
    /// Needles: (index into the rule's slots, folded literal).
    #[serde(rename = "n")]
    pub(crate) needles: Vec<(u32, String)>,
}

/// The entry as a line (without its end): metadata, then each segment after a tab.
pub(crate) fn encode(entry: &FileEntry, segments: &[String]) -> Option<String> {
    let mut line = serde_json::to_string(entry).ok()?;
    for s in segments {
        // Compact JSON has no raw tab or line end; anything else would break the line.
        if s.contains(['\t', '\n', '\r']) {
            return None;
        }
        line.push('\t');
        line.push_str(s);
    }
    (!line.contains(['\n', '\r'])).then_some(line)
}

/// The entry in `text[range]`, and where each of its segments is in `text`; `None`
/// when it does not parse.
pub(crate) fn decode(text: &str, range: Range<usize>) -> Option<(FileEntry, Vec<Range<usize>>)> {
    let line = text.get(range.clone())?;
    let mut parts = line.split('\t');
    let meta = parts.next()?;
    let entry: FileEntry = serde_json::from_str(meta).ok()?;
    let mut segments = Vec::new();
    let mut at = range.start + meta.len();
    for p in parts {
        at += 1;
        segments.push(at..at + p.len());
        at += p.len();
    }
    Some((entry, segments))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips_and_finds_its_segments() {
        let entry = FileEntry::Docs(vec![
            DocEntry::Refused {
                title: None,
                reason: "rule has no title".into(),
            },
            DocEntry::Doc {
                title: "T\twith a tab".into(),
                id: Some("x".into()),
                status: None,
                body: Body::Json(1),
            },
        ]);
        let segs = vec![r#"{"a":"b\tc"}"#.to_string(), "[1,2]".to_string()];
        let line = encode(&entry, &segs).unwrap();
        let text = format!("prefix {line}");
        let (back, ranges) = decode(&text, 7..text.len()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{entry:?}"));
        assert_eq!(&text[ranges[0].clone()], segs[0]);
        assert_eq!(&text[ranges[1].clone()], segs[1]);
        // A raw tab in a segment cannot be kept on one line.
        assert!(encode(&entry, &["a\tb".to_string()]).is_none());
        assert!(decode("{not json", 0..9).is_none());
    }
}
