//! The keys every action type shares (`name`, `type`, `queue_capacity`, `retry`,
//! `durable`, `throttle`, `dedupe`), taken out of the table and checked once.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;
use watchpost_event::ConfigError;

use crate::durable::Retry;
use crate::kit::{Tpl, bounded, deserialize, duration, positive};
use crate::limits::LimitSpec;

/// The keys every action type shares: `name`, `type`, `queue_capacity`, `retry`,
/// `durable`, `throttle`, `dedupe`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Common {
    /// Jobs that may wait (the kind's default unless written).
    pub(crate) queue_capacity: usize,
    /// `queue_capacity = …` as written, checked against the kind's range.
    pub(crate) queue_capacity_raw: Option<Spanned<u64>>,
    pub(crate) retry: Retry,
    /// Whether a `retry` table was written (a `run` action retries only then).
    pub(crate) retry_configured: bool,
    /// `durable = …` as written; the default is on for kinds with a deliverer.
    pub(crate) durable: Option<bool>,
    pub(crate) limits: LimitSpec,
    /// Where `retry` and `durable` were written (they need a kind that delivers).
    pub(crate) retry_span: Option<Range<usize>>,
    pub(crate) durable_span: Option<Range<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<Spanned<u64>>,
    max_age: Option<Spanned<String>>,
    initial_backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    max_queue: Option<Spanned<SizeValue>>,
}

/// A size: a number of bytes or a string such as `"512MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    key: Option<Spanned<String>>,
    count: Option<Spanned<u64>>,
    per: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDedupe {
    key: Option<Spanned<String>>,
    within: Spanned<String>,
}

/// Takes the common keys out of an action table and validates them.
pub(crate) fn parse_common(
    table: &mut Spanned<DeValue<'_>>,
    errors: &mut Vec<ConfigError>,
) -> Common {
    let mut common = Common::default();
    let DeValue::Table(entries) = table.get_mut() else {
        return common;
    };
    let mut take = |key: &str| entries.remove(key);
    // Read by `parse_action` already.
    take("name");
    take("type");
    if let Some(q) = take("queue_capacity") {
        match q.get_ref() {
            DeValue::Integer(i) => match i.as_str().parse::<u64>() {
                Ok(n) => common.queue_capacity_raw = Some(Spanned::new(q.span(), n)),
                Err(_) => errors.push(ConfigError::new(
                    q.span(),
                    "`queue_capacity` must be a positive whole number",
                )),
            },
            _ => errors.push(ConfigError::new(
                q.span(),
                "`queue_capacity` must be a positive whole number",
            )),
        }
    }
    let (retry, durable, throttle, dedupe) = (
        take("retry"),
        take("durable"),
        take("throttle"),
        take("dedupe"),
    );
    if let Some(v) = retry {
        common.retry_configured = true;
        common.retry_span = Some(v.span());
        match deserialize::<RawRetry>(v) {
            Ok(r) => {
                let d = Retry::default();
                let max_attempts = bounded(
                    r.max_attempts.as_ref(),
                    0,
                    0..=1_000_000,
                    "max_attempts",
                    errors,
                ) as u32;
                let max_age = duration(r.max_age.as_ref(), d.max_age, errors);
                let initial = duration(r.initial_backoff.as_ref(), d.initial_backoff, errors);
                positive(initial, r.initial_backoff.as_ref(), errors);
                let max_backoff = duration(r.max_backoff.as_ref(), d.max_backoff, errors);
                positive(max_backoff, r.max_backoff.as_ref(), errors);
                if let Some(s) = &r.max_backoff
                    && max_backoff < initial
                {
                    errors.push(ConfigError::new(
                        s.span(),
                        "`max_backoff` is shorter than `initial_backoff`",
                    ));
                }
                let max_queue_bytes = match &r.max_queue {
                    None => d.max_queue_bytes,
                    Some(v) => {
                        let n = match v.get_ref() {
                            SizeValue::Bytes(n) => Ok(*n),
                            SizeValue::Text(t) => watchpost_event::parse_size(t),
                        };
                        match n {
                            Ok(n) if n >= 1 << 20 => n,
                            Ok(_) => {
                                errors.push(ConfigError::new(
                                    v.span(),
                                    "`max_queue` must be at least 1MiB",
                                ));
                                d.max_queue_bytes
                            }
                            Err(m) => {
                                errors.push(ConfigError::new(v.span(), m));
                                d.max_queue_bytes
                            }
                        }
                    }
                };
                common.retry = Retry {
                    max_attempts,
                    max_age,
                    initial_backoff: initial,
                    max_backoff: max_backoff.max(initial),
                    max_queue_bytes,
                };
            }
            Err(e) => errors.extend(e),
        }
    }
    if let Some(v) = durable {
        common.durable_span = Some(v.span());
        match v.get_ref() {
            DeValue::Boolean(b) => common.durable = Some(*b),
            _ => errors.push(ConfigError::new(
                v.span(),
                "`durable` must be true or false",
            )),
        }
    }
    if let Some(v) = throttle {
        match deserialize::<RawThrottle>(v) {
            Ok(t) => {
                let key = Tpl::or_default(t.key.as_ref(), "{{ filter }}", errors);
                let count = bounded(t.count.as_ref(), 1, 1..=1_000_000, "count", errors) as u32;
                let per = duration(Some(&t.per), std::time::Duration::ZERO, errors);
                positive(per, Some(&t.per), errors);
                common.limits.throttle = key.map(|k| (k, count, per));
            }
            Err(e) => errors.extend(e),
        }
    }
    if let Some(v) = dedupe {
        match deserialize::<RawDedupe>(v) {
            Ok(d) => {
                let key = Tpl::or_default(d.key.as_ref(), "{{ filter }}|{{ raw }}", errors);
                let within = duration(Some(&d.within), std::time::Duration::ZERO, errors);
                positive(within, Some(&d.within), errors);
                common.limits.dedupe = key.map(|k| (k, within));
            }
            Err(e) => errors.extend(e),
        }
    }
    common
}
