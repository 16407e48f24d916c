//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use watchpost_actions::{ActionSpec, Job, parse_action};
use watchpost_event::{Event, Sym, Value};

/// Parses every `[[action]]` of a TOML text, panicking with the errors on failure.
pub fn specs(text: &str) -> Vec<ActionSpec> {
    let doc = toml::de::DeTable::parse(text)
        .expect("valid TOML")
        .into_inner();
    let actions = doc
        .get("action")
        .expect("has [[action]]")
        .clone()
        .into_inner();
    let toml::de::DeValue::Array(items) = actions else {
        panic!("[[action]] is not an array")
    };
    items
        .into_iter()
        .map(|t| parse_action(t).unwrap_or_else(|e| panic!("config errors: {e:?}\n{text}")))
        .collect()
}

/// A fixed SEP-like event.
pub fn event(host: &str) -> Event {
    let raw = "5/29/2019 8:23:57,Virus found,IP Address: 10.0.0.5,Computer name: pc1";
    let mut e = Event::new(Arc::from("sep-av"), Arc::from(host), raw.into());
    e.time = Some("2019-05-29T08:23:57.123Z".parse().expect("time"));
    e.push(Sym::new("risk_name"), Value::Static("EICAR Test String"));
    e.push(
        Sym::new("file_path"),
        Value::Str(r"C:\Users\a\eicar.com".into()),
    );
    e.push(Sym::new("ip_address"), Value::Static("10.0.0.5"));
    e.finish();
    e
}

pub fn job(event: Event, filter: &str) -> Job {
    Job {
        event: Arc::new(event),
        filter: Arc::from(filter),
        actions: Arc::from("a,b"),
        stored: None,
        ticket: Default::default(),
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
