//! Sigma 1's aggregation conditions (`condition: selection | count() by IpAddress > 5`
//! with a `timeframe`), deprecated by the correlation specification but still written
//! in Hayabusa's rules, translated into the equivalent correlation: the part before `|`
//! stays the rule's condition (its matches only feed the correlation), the aggregation
//! becomes an `event_count` (`count()`), `value_count` (`count(Field)`), `value_sum`
//! (`sum(Field)`) or `value_avg` (`avg(Field)`) correlation over that rule, grouped by
//! the `by` field, with the `timeframe` as its timespan (none: the whole stream).

use std::sync::Arc;

use serde_json::Value as Json;

use crate::correlation::{Condition, CorrelationRule, Kind, parse_timespan};
use crate::level::Level;

/// A timespan for aggregations without `timeframe`: about a century, i.e. all of a hunt.
const WHOLE_STREAM_SECS: i64 = 100 * 365 * 86_400;

/// A rule's aggregation, split off its detection.
pub(crate) struct Aggregation {
    /// The detection with the aggregation (and `timeframe`) removed from its condition.
    pub(crate) detection: serde_json::Map<String, Json>,
    kind: Kind,
    group_by: Vec<String>,
    timespan_secs: i64,
    condition: Condition,
}

impl Aggregation {
    /// The correlation over the selection rule named `base`.
    pub(crate) fn correlation(
        self,
        title: Arc<str>,
        id: Option<Arc<str>>,
        level: Level,
        base: String,
    ) -> CorrelationRule {
        CorrelationRule {
            title,
            id,
            name: None,
            level,
            kind: self.kind,
            rules: vec![base],
            group_by: self.group_by,
            timespan_secs: self.timespan_secs,
            condition: self.condition,
            generate: false,
        }
    }
}

/// Splits an aggregation off `detection`'s condition; `None` when it has none.
/// `timeframe` is the rule's top-level one (the detection's wins).
pub(crate) fn split(
    detection: &serde_json::Map<String, Json>,
    timeframe: Option<&Json>,
) -> Result<Option<Aggregation>, String> {
    let Some(Json::String(cond)) = detection.get("condition") else {
        if let Some(Json::Array(v)) = detection.get("condition")
            && v.iter()
                .any(|c| c.as_str().is_some_and(|c| c.contains('|')))
        {
            return Err("an aggregation in a list of conditions is not supported".into());
        }
        return Ok(None);
    };
    let Some((base, agg)) = cond.split_once('|') else {
        return Ok(None);
    };
    let (kind, group_by, condition) = parse(agg.trim())?;
    let timeframe = detection.get("timeframe").or(timeframe);
    let timespan_secs = match timeframe {
        None | Some(Json::Null) => WHOLE_STREAM_SECS,
        Some(Json::String(s)) => parse_timespan(s).map_err(|e| e.to_string())?,
        Some(_) => return Err("timeframe must be a string such as `5m`".into()),
    };
    let mut detection = detection.clone();
    detection.insert("condition".into(), Json::String(base.trim().to_string()));
    detection.remove("timeframe");
    Ok(Some(Aggregation {
        detection,
        kind,
        group_by,
        timespan_secs,
        condition,
    }))
}

/// `count(F) by G > N` → the kind, the group-by fields and the condition.
fn parse(s: &str) -> Result<(Kind, Vec<String>, Condition), String> {
    let bad = || format!("aggregation `{s}`: expected `count([field]) [by field] OP number`");
    let open = s.find('(').ok_or_else(bad)?;
    let close = s[open..].find(')').ok_or_else(bad)? + open;
    let func = s[..open].trim().to_ascii_lowercase();
    let field = s[open + 1..close].trim();
    let field = (!field.is_empty()).then(|| field.to_string());
    let kind = match (func.as_str(), field) {
        ("count", None) => Kind::EventCount,
        ("count", Some(f)) => Kind::ValueCount { field: f },
        ("sum", Some(f)) => Kind::ValueSum { field: f },
        ("avg", Some(f)) => Kind::ValueAvg { field: f },
        ("sum" | "avg", None) => return Err(format!("aggregation `{s}` needs a field")),
        (other, _) => return Err(format!("aggregation function `{other}` is not supported")),
    };
    let mut rest = s[close + 1..].trim();
    let mut group_by = Vec::new();
    if let Some(r) = rest
        .strip_prefix("by ")
        .or_else(|| rest.strip_prefix("BY "))
    {
        let r = r.trim_start();
        let end = r
            .find(|c: char| c.is_whitespace() || "<>=!".contains(c))
            .unwrap_or(r.len());
        group_by.push(r[..end].to_string());
        rest = r[end..].trim();
    }
    let (op, n) = ["<=", ">=", "==", "!=", "<", ">", "="]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|n| (*op, n.trim())))
        .ok_or_else(bad)?;
    let n: f64 = n.parse().map_err(|_| bad())?;
    let mut c = Condition::default();
    match op {
        "<" => c.lt = Some(n),
        "<=" => c.lte = Some(n),
        ">" => c.gt = Some(n),
        ">=" => c.gte = Some(n),
        "==" | "=" => c.eq = Some(n),
        _ => return Err(format!("aggregation `{s}`: `!=` is not supported")),
    }
    Ok((kind, group_by, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let (k, g, c) = parse("count() by IpAddress >= 5").unwrap();
        assert_eq!(
            (k, g, c.gte),
            (Kind::EventCount, vec!["IpAddress".into()], Some(5.0))
        );
        let (k, g, c) = parse("count(TargetUserName) by Workstation > 10").unwrap();
        assert_eq!(
            (k, g, c.gt),
            (
                Kind::ValueCount {
                    field: "TargetUserName".into()
                },
                vec!["Workstation".into()],
                Some(10.0)
            )
        );
        let (k, g, c) = parse("count() > 10").unwrap();
        assert_eq!((k, g.len(), c.gt), (Kind::EventCount, 0, Some(10.0)));
        let (_, g, c) = parse("count() by TaskName < 5").unwrap();
        assert_eq!((g, c.lt), (vec!["TaskName".into()], Some(5.0)));
        assert!(parse("min(x) > 3").is_err());
        assert!(parse("count() by x").is_err());
        assert!(parse("count() != 3").is_err());
    }

    #[test]
    fn split_keeps_the_selection() {
        let d: serde_json::Map<String, Json> = serde_json::from_str(
            r#"{"sel": {"EventID": 4625}, "condition": "sel | count() by IpAddress > 5", "timeframe": "5m"}"#,
        )
        .unwrap();
        let a = split(&d, None).unwrap().unwrap();
        assert_eq!(a.detection["condition"], "sel");
        assert!(!a.detection.contains_key("timeframe"));
        assert_eq!(a.timespan_secs, 300);
        let plain: serde_json::Map<String, Json> =
            serde_json::from_str(r#"{"sel": {"EventID": 4625}, "condition": "sel"}"#).unwrap();
        assert!(split(&plain, None).unwrap().is_none());
    }
}
