//! The per-record hot path shared by `run` and `test`: parse → filter chain → verdict.
//!
//! Nothing here blocks: `run` hands the verdict's actions to the dispatcher's queues.

use std::sync::Arc;

use watchpost_filters::{Chain, Plan};
use watchpost_sources::{Format, ParseCtx, Parser};

use crate::config::SourceConfig;

/// One source's parser, context and filter plan.
pub struct SourceRuntime {
    /// The source's name.
    pub name: Arc<str>,
    /// Its format.
    pub format: Format,
    /// Parser for its records.
    pub parser: Box<dyn Parser>,
    /// Metadata for parsed events.
    pub ctx: ParseCtx,
    /// The filters that apply to it.
    pub plan: Plan,
}

impl SourceRuntime {
    /// Prepares a source for `chain`.
    pub fn new(
        name: &str,
        format: Format,
        local_host: &str,
        tz: Option<jiff::tz::TimeZone>,
        chain: &Chain,
    ) -> Self {
        let mut ctx = ParseCtx::new(name, local_host);
        if let Some(tz) = tz {
            ctx.tz = tz;
        }
        SourceRuntime {
            name: name.into(),
            format,
            parser: format.parser(),
            ctx,
            plan: chain.plan(name),
        }
    }

    /// Prepares a configured source.
    pub fn from_config(s: &SourceConfig, local_host: &str, chain: &Chain) -> Self {
        let host = s.host.as_deref().unwrap_or(local_host);
        let mut rt = Self::new(&s.name, s.format, host, s.timezone.clone(), chain);
        rt.parser = s.parser();
        rt
    }
}

/// This machine's host name (`COMPUTERNAME` on Windows, the kernel's on Linux).
pub fn local_host_name() -> String {
    if let Ok(name) = std::env::var("COMPUTERNAME")
        && !name.is_empty()
    {
        return name;
    }
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = std::fs::read_to_string(path) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_owned();
            }
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
}
