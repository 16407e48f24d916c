//! The one event path: parse → filter chain (with anomaly and threshold judgement) →
//! Sigma rule sets → store → a [`Sink`].
//!
//! The daemon, `watchpost test`, `hunt -c` and `baseline learn` all drive a [`Pipeline`];
//! what differs is the sink: the daemon's hands action jobs to the dispatcher and counts
//! for the metrics, a replay's prints, a hunt's collects anomalies.
//!
//! Everything a configuration decides about judging lives in one immutable
//! [`Generation`]: the chain, the per-source plans, the rule sets, the action table. A
//! reload builds the next generation off to the side and publishes it in the
//! [`Current`] cell; each pipeline notices the new number with one atomic load per record
//! and switches *between* two records, so every event is judged entirely by one
//! generation. Nothing on this path blocks except the daemon sink's wait on a full action
//! queue (`when_queue_full = "wait"`).

use std::collections::HashMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use watchpost_actions::Lane;
use watchpost_anomaly::Verdict as Judgement;
use watchpost_config::rules::RuleSet;
use watchpost_config::{Config, SourceConfig, WhenFull};
use watchpost_event::{Event, Origin};
use watchpost_filters::{Chain, Plan, Verdict};
use watchpost_sources::{Format, Item, ParseCtx, Parser, Place};

use crate::analysis::{Analysis, JudgeTable};

/// One configuration generation: everything that judges an event. Immutable; shared by
/// every pipeline through an `Arc`.
///
/// Generation numbers start at 1 when the daemon starts and grow by one with every
/// reload that changed something (`watchpost_config_generation`); a replay's is 0.
pub struct Generation {
    /// Its number.
    pub number: u64,
    /// The filter chain.
    pub chain: Chain,
    /// Sigma rule sets (a set whose table and files did not change is the running one,
    /// correlation windows and all).
    pub rules: Vec<Arc<RuleSet>>,
    /// Per rule set: its actions' indices in [`Generation::actions`].
    pub rule_actions: Vec<Vec<usize>>,
    /// Per rule set: its actions' names, comma-separated.
    pub rule_action_names: Vec<Arc<str>>,
    /// Where jobs go, by action index (empty in replays).
    pub actions: Vec<Arc<Lane>>,
    /// Baseline ids and threshold names by chain index.
    pub judges: JudgeTable,
    /// Plans of the configured sources and checks.
    plans: HashMap<String, Arc<Plan>>,
    /// `[agent] log_fired`.
    pub log_fired: bool,
    /// `[agent] when_queue_full`.
    pub when_full: WhenFull,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("number", &self.number)
            .field("filters", &self.chain.len())
            .field("rules", &self.rules.len())
            .field("actions", &self.actions.len())
            .finish()
    }
}

impl Generation {
    /// Builds a generation of `config` (its rule sets taken out of it). `keep_rules`
    /// names the running sets to keep instead of the new ones; `actions` are the lanes
    /// in `config.actions` order (none for a replay).
    pub fn build(
        number: u64,
        config: &mut Config,
        chain: Chain,
        judges: JudgeTable,
        actions: Vec<Arc<Lane>>,
        keep_rules: &dyn Fn(&str) -> Option<Arc<RuleSet>>,
    ) -> Generation {
        let names: Vec<&str> = config.actions.iter().map(|a| a.name()).collect();
        let sets: Vec<Arc<RuleSet>> = std::mem::take(&mut config.rules)
            .into_iter()
            .map(|set| keep_rules(&set.name).unwrap_or_else(|| Arc::new(set)))
            .collect();
        let rule_actions = sets
            .iter()
            .map(|set| {
                set.actions
                    .iter()
                    .filter_map(|(n, _)| names.iter().position(|a| a == n))
                    .collect()
            })
            .collect();
        let rule_action_names = sets
            .iter()
            .map(|set| {
                let n: Vec<&str> = set.actions.iter().map(|(n, _)| n.as_str()).collect();
                Arc::from(n.join(","))
            })
            .collect();
        let plans = config
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .chain(config.checks.iter().map(|c| c.name.as_str()))
            .map(|n| (n.to_owned(), Arc::new(chain.plan(n))))
            .collect();
        Generation {
            number,
            chain,
            rules: sets,
            rule_actions,
            rule_action_names,
            actions,
            judges,
            plans,
            log_fired: config.agent.log_fired,
            when_full: config.agent.when_queue_full,
        }
    }

    /// The plan of a source (computed now for a name the configuration does not list:
    /// a replay's detected format).
    pub fn plan(&self, source: &str) -> Arc<Plan> {
        self.plans
            .get(source)
            .cloned()
            .unwrap_or_else(|| Arc::new(self.chain.plan(source)))
    }
}

/// The current generation, swapped by a reload. Readers check [`Current::number`] (one
/// atomic load) and take the lock only when it moved.
#[derive(Debug)]
pub struct Current {
    number: AtomicU64,
    value: Mutex<Arc<Generation>>,
}

impl Current {
    /// A cell holding `g`.
    pub fn new(g: Generation) -> Current {
        Current {
            number: AtomicU64::new(g.number),
            value: Mutex::new(Arc::new(g)),
        }
    }

    /// The current generation's number.
    pub fn number(&self) -> u64 {
        self.number.load(Ordering::Acquire)
    }

    /// The current generation.
    pub fn load(&self) -> Arc<Generation> {
        watchpost_support::lock(&self.value).clone()
    }

    /// Publishes `g`; pipelines take it before their next record. Returns the previous.
    pub fn store(&self, g: Generation) -> Arc<Generation> {
        let number = g.number;
        let old = std::mem::replace(&mut *watchpost_support::lock(&self.value), Arc::new(g));
        self.number.store(number, Ordering::Release);
        old
    }
}

/// What fired: a filter, a filter's held-back matches, or a Sigma rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiredBy {
    /// The filter at this chain index.
    Filter(usize),
    /// Matches the threshold filter at this chain index held back and released.
    Released(usize),
    /// The rule set at this index of [`Generation::rules`].
    Rules(usize),
}

/// One firing, handed to the sink.
#[derive(Debug)]
pub struct Firing<'a> {
    /// What fired.
    pub by: FiredBy,
    /// The filter's name, or the rule's (correlation's) title.
    pub name: &'a Arc<str>,
    /// Its actions' names, comma-separated.
    pub action_names: &'a Arc<str>,
    /// Its actions' indices.
    pub actions: &'a [usize],
    /// Actions an exclude filter withheld from this event.
    pub withheld: &'a [usize],
    /// The event (a rule's detection: with the rule's fields added).
    pub event: &'a Arc<Event>,
    /// Its id in the event store, when stored.
    pub stored: Option<u64>,
    /// When its record was read.
    pub read_at: Instant,
}

/// Where a pipeline's results go.
pub trait Sink {
    /// A record arrived (before parsing).
    fn received(&mut self) {}

    /// A record that did not parse.
    fn unparsable(&mut self, source: &str, place: &str, offset: u64, error: &dyn Display);

    /// The chain's verdict on an event, with the anomaly filters' judgements, before any
    /// firing is handed on.
    fn verdict(
        &mut self,
        generation: &Generation,
        event: &Event,
        verdict: &Verdict,
        judged: &[(usize, Judgement)],
    );

    /// A filter or rule fired.
    fn fire(&mut self, generation: &Generation, firing: &Firing<'_>);
}

/// The event path of one source (or one replay input): its parser, its plan in the
/// current generation, reused buffers.
pub struct Pipeline {
    source: Arc<str>,
    parser: Box<dyn Parser>,
    ctx: ParseCtx,
    current: Arc<Current>,
    generation: Arc<Generation>,
    plan: Arc<Plan>,
    analysis: Arc<Analysis>,
    verdict: Verdict,
    scratch: Vec<watchpost_sigma::Match>,
    /// The last place seen and its shared text (a file's lines share one).
    place: Option<(PlaceKey, Arc<str>)>,
}

#[derive(Debug, PartialEq, Eq)]
enum PlaceKey {
    Path(PathBuf),
    Name(String),
    Peer(&'static str, std::net::SocketAddr),
}

impl PlaceKey {
    fn matches(&self, p: &Place<'_>) -> bool {
        match (self, p) {
            (PlaceKey::Path(a), Place::Path(b)) => a == b,
            (PlaceKey::Name(a), Place::Name(b)) => a == b,
            (PlaceKey::Peer(a, x), Place::Peer(b, y)) => a == b && x == y,
            _ => false,
        }
    }

    fn of(p: &Place<'_>) -> PlaceKey {
        match p {
            Place::Path(p) => PlaceKey::Path(p.to_path_buf()),
            Place::Name(n) => PlaceKey::Name((*n).to_owned()),
            Place::Peer(proto, a) => PlaceKey::Peer(proto, *a),
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("source", &self.source)
            .field("generation", &self.generation.number)
            .finish_non_exhaustive()
    }
}

/// How a pipeline parses: a configured source, or a bare format (replays of files no
/// source describes).
#[derive(Debug, Clone, Copy)]
pub enum SourceKind<'a> {
    /// A `[[source]]`.
    Configured(&'a SourceConfig),
    /// A format, named after itself (or a check: JSON lines named after the check).
    Named(&'a str, Format),
}

impl Pipeline {
    /// A pipeline for one source, judging with `current`'s generation.
    pub fn new(
        kind: SourceKind<'_>,
        local_host: &str,
        current: Arc<Current>,
        analysis: Arc<Analysis>,
    ) -> Pipeline {
        let (name, parser, ctx) = match kind {
            SourceKind::Configured(s) => {
                let mut ctx =
                    ParseCtx::new(s.name.as_str(), s.host.as_deref().unwrap_or(local_host));
                if let Some(tz) = &s.timezone {
                    ctx.tz = tz.clone();
                }
                (s.name.as_str(), s.parser(), ctx)
            }
            SourceKind::Named(n, f) => (n, f.parser(), ParseCtx::new(n, local_host)),
        };
        let generation = current.load();
        Pipeline {
            source: name.into(),
            parser,
            ctx,
            plan: generation.plan(name),
            generation,
            current,
            analysis,
            verdict: Verdict::default(),
            scratch: Vec::new(),
            place: None,
        }
    }

    /// The source's name.
    pub fn source(&self) -> &Arc<str> {
        &self.source
    }

    /// Its parse context (the Windows Event Log parses with it).
    pub fn ctx(&self) -> &ParseCtx {
        &self.ctx
    }

    /// The generation it judges with now.
    pub fn generation(&self) -> &Arc<Generation> {
        &self.generation
    }

    /// Takes a newly published generation (between two records; cheap when none).
    pub fn refresh(&mut self) {
        if self.current.number() != self.generation.number {
            self.generation = self.current.load();
            self.plan = self.generation.plan(&self.source);
        }
    }

    /// Handles one record from a source.
    pub fn handle<S: Sink>(&mut self, item: Item<'_>, sink: &mut S) {
        self.refresh();
        sink.received();
        match item {
            Item::Bytes {
                bytes,
                place,
                offset,
                read_at,
            } => match self.parser.parse(&self.ctx, bytes) {
                Ok(mut event) => {
                    event.origin = Some(Origin {
                        place: self.place_text(&place),
                        offset,
                    });
                    self.judge(event, read_at, sink);
                }
                Err(e) => sink.unparsable(&self.source, &place.to_string(), offset, &e),
            },
            Item::Event(event) => self.judge(event, Instant::now(), sink),
        }
    }

    /// Handles an event parsed elsewhere (a replay's file, a check's report).
    pub fn handle_event<S: Sink>(&mut self, event: Event, read_at: Instant, sink: &mut S) {
        self.refresh();
        self.judge(event, read_at, sink);
    }

    fn place_text(&mut self, place: &Place<'_>) -> Arc<str> {
        if let Some((key, text)) = &self.place
            && key.matches(place)
        {
            return text.clone();
        }
        let text: Arc<str> = place.to_string().into();
        self.place = Some((PlaceKey::of(place), text.clone()));
        text
    }

    /// Runs the chain (anomaly filters and thresholds asking the analysis), stores what
    /// matched, then hands on every firing: filters, released matches, rule sets.
    fn judge<S: Sink>(&mut self, mut event: Event, read_at: Instant, sink: &mut S) {
        let Pipeline {
            generation: g,
            plan,
            analysis,
            verdict: v,
            scratch,
            ..
        } = self;
        let mut judge = analysis.judge(&g.judges);
        g.chain.evaluate_with(plan, &mut event, v, &mut judge);
        sink.verdict(g, &event, v, &judge.verdicts);
        if v.excluded_by.is_some() {
            return;
        }
        if v.fired.is_empty() && v.judged.is_empty() {
            // Most events: nothing to store or send; only rule sets may want it.
            release(g, analysis, &mut judge.released, read_at, sink);
            sigma(g, analysis, scratch, &event, &v.withheld, read_at, sink);
            return;
        }
        // Shared by the store and every action job (no copy of the event).
        let event = Arc::new(event);
        let stored = analysis.store(&g.chain, &event, v, &judge.verdicts);
        for &fi in &v.fired {
            let f = g.chain.filter(fi);
            sink.fire(
                g,
                &Firing {
                    by: FiredBy::Filter(fi),
                    name: &f.name,
                    action_names: &f.action_names,
                    actions: &f.actions,
                    withheld: &v.withheld,
                    event: &event,
                    stored,
                    read_at,
                },
            );
        }
        release(g, analysis, &mut judge.released, read_at, sink);
        sigma(g, analysis, scratch, &event, &v.withheld, read_at, sink);
    }

    /// The end of a replay's records: correlation windows still open are decided now.
    pub fn finish<S: Sink>(&mut self, sink: &mut S) {
        let g = self.generation.clone();
        for (si, set) in g.rules.iter().enumerate() {
            for d in set.finish() {
                let detected = Arc::new(d.event);
                sink.fire(
                    &g,
                    &Firing {
                        by: FiredBy::Rules(si),
                        name: &d.title,
                        action_names: &g.rule_action_names[si],
                        actions: &g.rule_actions[si],
                        withheld: &[],
                        event: &detected,
                        stored: None,
                        read_at: Instant::now(),
                    },
                );
            }
        }
    }
}

/// Matches a threshold filter held back, released by this event: they fire that
/// filter's actions.
fn release<S: Sink>(
    g: &Generation,
    analysis: &Analysis,
    released: &mut Vec<(usize, Event)>,
    read_at: Instant,
    sink: &mut S,
) {
    for (fi, held) in released.drain(..) {
        let f = g.chain.filter(fi);
        let held = Arc::new(held);
        let stored = analysis.store_named(&f.name, &held, f.require_ack);
        sink.fire(
            g,
            &Firing {
                by: FiredBy::Released(fi),
                name: &f.name,
                action_names: &f.action_names,
                actions: &f.actions,
                withheld: &[],
                event: &held,
                stored,
                read_at,
            },
        );
    }
}

/// Offers the event to every rule set; each detection is stored and fired.
fn sigma<S: Sink>(
    g: &Generation,
    analysis: &Analysis,
    scratch: &mut Vec<watchpost_sigma::Match>,
    event: &Event,
    withheld: &[usize],
    read_at: Instant,
    sink: &mut S,
) {
    for (si, set) in g.rules.iter().enumerate() {
        for d in set.detect(event, scratch) {
            let detected = Arc::new(d.event);
            let stored = analysis.store_named(&set.name, &detected, false);
            sink.fire(
                g,
                &Firing {
                    by: FiredBy::Rules(si),
                    name: &d.title,
                    action_names: &g.rule_action_names[si],
                    actions: &g.rule_actions[si],
                    withheld,
                    event: &detected,
                    stored,
                    read_at,
                },
            );
        }
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
