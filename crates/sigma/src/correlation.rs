//! Sigma correlation rules as read from their YAML: the kinds (`event_count`,
//! `value_count`, `temporal`, `temporal_ordered`, `value_sum`, `value_avg`,
//! `value_percentile`), their conditions and time spans. The rules are evaluated over
//! the stream of matches by the `Correlator` in `correlate.rs`; Sigma 1 aggregations
//! are translated into these rules by `aggregation.rs`.

use std::sync::Arc;

use serde_json::Value as Json;

use crate::level::Level;

/// The kind of a correlation.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// N matching events.
    EventCount,
    /// N distinct values of `field`.
    ValueCount {
        /// The field counted.
        field: String,
    },
    /// Every referenced rule matched in the window.
    Temporal,
    /// Every referenced rule matched in the window, in the order listed.
    TemporalOrdered,
    /// The sum of the numeric values of `field`.
    ValueSum {
        /// The field summed.
        field: String,
    },
    /// The mean of the numeric values of `field`.
    ValueAvg {
        /// The field averaged.
        field: String,
    },
    /// The `percentile`-th percentile of the numeric values of `field`.
    ValuePercentile {
        /// The field.
        field: String,
        /// 0–100 (default 50).
        percentile: f64,
    },
}

impl Kind {
    /// The field a value aggregation reads (none for counts and temporal kinds).
    pub(crate) fn field(&self) -> Option<&str> {
        match self {
            Kind::ValueCount { field }
            | Kind::ValueSum { field }
            | Kind::ValueAvg { field }
            | Kind::ValuePercentile { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A correlation `condition`: every bound given must hold (`gt: 100` + `lte: 200` is the
/// range 101–200).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Condition {
    /// `gt`
    pub gt: Option<f64>,
    /// `gte`
    pub gte: Option<f64>,
    /// `lt`
    pub lt: Option<f64>,
    /// `lte`
    pub lte: Option<f64>,
    /// `eq`
    pub eq: Option<f64>,
}

impl Condition {
    /// Whether `v` satisfies every bound.
    pub fn holds(&self, v: f64) -> bool {
        self.gt.is_none_or(|t| v > t)
            && self.gte.is_none_or(|t| v >= t)
            && self.lt.is_none_or(|t| v < t)
            && self.lte.is_none_or(|t| v <= t)
            && self.eq.is_none_or(|t| v == t)
    }

    /// Whether the condition has an upper bound (`lt`, `lte`, `eq`): it is then decided
    /// when the window closes, not at the match that reaches it.
    pub fn at_close(&self) -> bool {
        self.lt.is_some() || self.lte.is_some() || self.eq.is_some()
    }

    fn is_empty(&self) -> bool {
        *self == Condition::default()
    }
}

/// A parsed correlation rule.
#[derive(Debug, Clone)]
pub struct CorrelationRule {
    /// `title`.
    pub title: Arc<str>,
    /// `id`.
    pub id: Option<Arc<str>>,
    /// `name`.
    pub name: Option<String>,
    /// `level`.
    pub level: Level,
    /// The type.
    pub kind: Kind,
    /// Referenced rules (ids or names).
    pub rules: Vec<String>,
    /// `group-by` fields.
    pub group_by: Vec<String>,
    /// `timespan` in seconds.
    pub timespan_secs: i64,
    /// The condition (temporal kinds without one: all referenced rules).
    pub condition: Condition,
    /// `generate`: whether the referenced rules' own matches are detections too. By
    /// default (`false`, as the correlation specification says) they only feed the
    /// correlation.
    pub generate: bool,
}

/// Parses a Sigma `timespan` (`5m`, `30s`, `1h`, `2d`, `1w`, `1M`, `1y`; a bare number is
/// seconds) into seconds, with watchpost's one duration parser.
pub fn parse_timespan(s: &str) -> Result<i64, crate::TimespanError> {
    let t = s.trim();
    let err = |why: String| crate::TimespanError {
        text: t.to_owned(),
        why,
    };
    let bare_seconds = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let d = if bare_seconds {
        watchpost_event::parse_duration(&format!("{t}s"))
    } else {
        watchpost_event::parse_duration(t)
    }
    .map_err(err)?;
    if d.is_zero() {
        return Err(err("it must be positive".into()));
    }
    i64::try_from(d.as_secs()).map_err(|_| err("it is too long".into()))
}

pub(crate) fn parse(
    c: &Json,
    generate: Option<&Json>,
    title: Arc<str>,
    id: Option<Arc<str>>,
    name: Option<String>,
    level: Level,
) -> Result<CorrelationRule, String> {
    let c = c.as_object().ok_or("correlation must be a mapping")?;
    let strs = |v: Option<&Json>| -> Vec<String> {
        match v {
            Some(Json::String(s)) => vec![s.clone()],
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => vec![],
        }
    };
    let rules = strs(c.get("rules"));
    if rules.is_empty() {
        return Err("correlation references no rules".into());
    }
    let group_by = strs(c.get("group-by"));
    let generate = match c.get("generate").or(generate) {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(_) => return Err("`generate` must be true or false".into()),
    };
    let timespan_secs = parse_timespan(
        c.get("timespan")
            .and_then(Json::as_str)
            .ok_or("correlation has no timespan")?,
    )
    .map_err(|e| e.to_string())?;
    let ty = c
        .get("type")
        .and_then(Json::as_str)
        .ok_or("correlation has no type")?;
    let mut field = None;
    let mut percentile = None;
    let mut cond = Condition::default();
    match c.get("condition") {
        None | Some(Json::Null) => {}
        Some(Json::Object(m)) => {
            for (k, v) in m {
                let n = || {
                    v.as_f64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| format!("condition `{k}` needs a number"))
                };
                match k.as_str() {
                    "gt" => cond.gt = Some(n()?),
                    "gte" => cond.gte = Some(n()?),
                    "lt" => cond.lt = Some(n()?),
                    "lte" => cond.lte = Some(n()?),
                    "eq" => cond.eq = Some(n()?),
                    "percentile" => {
                        let p = n()?;
                        if !(0.0..=100.0).contains(&p) {
                            return Err("condition `percentile` must be 0 to 100".into());
                        }
                        percentile = Some(p);
                    }
                    "field" => match v {
                        Json::String(s) => field = Some(s.clone()),
                        Json::Array(a) if a.len() == 1 => {
                            field = a[0].as_str().map(String::from);
                        }
                        _ => return Err("condition `field` must name one field".into()),
                    },
                    other => return Err(format!("unknown correlation condition `{other}`")),
                }
            }
        }
        Some(_) => return Err("correlation condition must be a mapping".into()),
    }
    let need_field = |t: &str| {
        field
            .clone()
            .ok_or_else(|| format!("{t} needs condition.field"))
    };
    let kind = match ty {
        "event_count" => Kind::EventCount,
        "value_count" => Kind::ValueCount {
            field: need_field(ty)?,
        },
        "value_sum" => Kind::ValueSum {
            field: need_field(ty)?,
        },
        "value_avg" => Kind::ValueAvg {
            field: need_field(ty)?,
        },
        "value_percentile" => Kind::ValuePercentile {
            field: need_field(ty)?,
            percentile: percentile.unwrap_or(50.0),
        },
        "temporal" => Kind::Temporal,
        "temporal_ordered" => Kind::TemporalOrdered,
        other => return Err(format!("correlation type `{other}` is not supported")),
    };
    if percentile.is_some() && !matches!(kind, Kind::ValuePercentile { .. }) {
        return Err("condition `percentile` is only for value_percentile".into());
    }
    if cond.is_empty() {
        match kind {
            Kind::Temporal | Kind::TemporalOrdered => cond.gte = Some(rules.len() as f64),
            _ => return Err("correlation has no condition (gt, gte, lt, lte or eq)".into()),
        }
    }
    Ok(CorrelationRule {
        title,
        id,
        name,
        level,
        kind,
        rules,
        group_by,
        timespan_secs,
        condition: cond,
        generate,
    })
}
