//! The pages, as maud templates compiled into the binary. Every value spliced with
//! `(…)` is HTML-escaped by maud; nothing is inserted raw except the markup built here.
//! Forms work without script; controls are labelled; the layout reads at 1280×800.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::backend::{
    AuditRow, BaselineRow, EventDetail, EventSummary, ExplainView, Home, HostDetail, HostRow,
    Overview, Role,
};
use crate::chart;
use crate::http::encode;

/// Who sees the page (for the header and which controls are offered).
pub struct Viewer<'a> {
    /// User name.
    pub user: &'a str,
    /// Role.
    pub role: Role,
    /// CSRF token for this session's forms.
    pub csrf: &'a str,
    /// Local or fleet.
    pub home: Home,
}

/// The page frame: navigation, the user, logout.
pub fn layout(title: &str, v: Option<&Viewer>, current: &str, body: Markup) -> Markup {
    let fleet = v.is_some_and(|v| v.home == Home::Fleet);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · watchpost" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                header.top {
                    a.brand href="/console/" { "watchpost" }
                    @if let Some(v) = v {
                        nav aria-label="Main" {
                            @for (href, name) in [
                                ("/console/", "Overview"),
                                ("/console/events", "Events"),
                                ("/console/hosts", if fleet { "Hosts" } else { "Host" }),
                                ("/console/baselines", "Baselines"),
                                ("/console/audit", "Audit log"),
                            ] {
                                @if name == current || (current == "Hosts" && name == "Host") {
                                    a href=(href) aria-current="page" { (name) }
                                } @else {
                                    a href=(href) { (name) }
                                }
                            }
                        }
                        form.logout method="post" action="/console/logout" {
                            span.user { (v.user) " (" (v.role.as_str()) ")" }
                            input type="hidden" name="csrf" value=(v.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The login form, with an optional message.
pub fn login(message: Option<&str>, next: &str) -> Markup {
    layout(
        "Log in",
        None,
        "",
        html! {
            section.login {
                h1 { "Log in" }
                @if let Some(m) = message { p.error role="alert" { (m) } }
                form method="post" action="/console/login" {
                    input type="hidden" name="next" value=(next);
                    label for="user" { "User" }
                    input #user type="text" name="user" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// An error page (4xx/5xx) with what went wrong.
pub fn error(v: Option<&Viewer>, title: &str, message: &str) -> Markup {
    layout(
        title,
        v,
        "",
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/console/" { "Back to the overview" } }
        },
    )
}

fn event_link(id: i64) -> String {
    format!("/console/events/{id}")
}

fn flags(e: &EventSummary) -> Markup {
    html! {
        @if e.anomaly { span.tag.anomaly { "anomaly" } " " }
        @if e.waiting { span.tag.waiting { "waiting for ack" } }
        @if e.acked { span.tag.acked { "acknowledged" } }
    }
}

/// A table of events; with `select`, a checkbox per waiting event for the ack form.
fn event_table(events: &[EventSummary], select: bool, fleet: bool) -> Markup {
    html! {
        table.events {
            thead { tr {
                @if select { th scope="col" { span.sr { "Select" } } }
                th scope="col" { "#" }
                th scope="col" { "Time" }
                th scope="col" { "Host" }
                th scope="col" { "Source" }
                th scope="col" { "Filters" }
                th scope="col" { "State" }
                th scope="col" { "Summary" }
            } }
            tbody {
                @for e in events {
                    tr {
                        @if select {
                            td {
                                @if e.waiting {
                                    input type="checkbox" name="id" value=(e.id) id=(format!("sel{}", e.id))
                                        aria-label=(format!("Select event {}", e.id));
                                }
                            }
                        }
                        td { a href=(event_link(e.id)) { (e.id) } }
                        td.time { (e.time) }
                        td {
                            @if fleet { a href=(format!("/console/events?q={}", encode(&format!("host:\"{}\"", e.host)))) { (e.host) } }
                            @else { (e.host) }
                        }
                        td { (e.source) }
                        td { (e.filters.join(", ")) }
                        td { (flags(e)) }
                        td.summary { a href=(event_link(e.id)) { (e.summary) } }
                    }
                }
            }
        }
    }
}

/// The overview.
pub fn overview(v: &Viewer, o: &Overview, hours: u32) -> Markup {
    let fleet = v.home == Home::Fleet;
    let all = vec![
        crate::backend::Series {
            name: "anomalies".into(),
            counts: o.anomalies.clone(),
        },
        crate::backend::Series {
            name: "other events".into(),
            counts: o
                .events
                .iter()
                .zip(o.anomalies.iter().chain(std::iter::repeat(&0)))
                .map(|(e, a)| e.saturating_sub(*a))
                .collect(),
        },
    ];
    layout(
        "Overview",
        Some(v),
        "Overview",
        html! {
            h1 { "Overview" }
            form.range method="get" action="/console/" {
                label for="hours" { "Time range" }
                select #hours name="hours" {
                    @for (h, name) in [(6, "last 6 hours"), (24, "last 24 hours"), (168, "last 7 days"), (720, "last 30 days")] {
                        option value=(h) selected[h == hours] { (name) }
                    }
                }
                button type="submit" { "Show" }
            }
            section.cards {
                a.card href="/console/events?q=needsack%3Atrue" {
                    span.n { (o.waiting) } " waiting for acknowledgement"
                }
                a.card href="/console/events?q=isanomaly%3Atrue" {
                    span.n { (o.anomalies.iter().sum::<u64>()) } " anomalies in range"
                }
                a.card href=(if fleet { "/console/hosts" } else { "/console/hosts/local" }) {
                    span.n { (o.attention.len()) } (if fleet { " hosts need attention" } else { " problems on this host" })
                }
            }
            section.charts {
                (chart::stacked("Events and anomalies", &o.buckets, o.bucket_ms, &all))
                (chart::stacked("By filter", &o.buckets, o.bucket_ms, &o.by_filter))
                (chart::stacked("By rule level", &o.buckets, o.bucket_ms, &o.by_level))
                (chart::stacked("By host", &o.buckets, o.bucket_ms, &o.by_host))
            }
            section {
                h2 { "Waiting for acknowledgement" }
                @if o.waiting_list.is_empty() {
                    p.empty { "Nothing waits for an acknowledgement." }
                } @else {
                    (event_table(&o.waiting_list, false, fleet))
                    p { a href="/console/events?q=needsack%3Atrue" { "All " (o.waiting) " waiting events" } }
                }
            }
            section {
                h2 { (if fleet { "Hosts that need attention" } else { "This host" }) }
                @if o.attention.is_empty() {
                    p.empty { "No problems reported." }
                } @else {
                    ul.attention {
                        @for a in &o.attention {
                            li {
                                a href=(format!("/console/hosts/{}", encode(&a.host))) { (a.name) } ": "
                                (a.problems.join("; "))
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What the events page was asked.
pub struct SearchForm<'a> {
    /// The query text.
    pub q: &'a str,
    /// From (as typed).
    pub since: &'a str,
    /// Until (as typed).
    pub until: &'a str,
    /// Oldest first.
    pub oldest_first: bool,
}

impl SearchForm<'_> {
    fn link(&self, extra: &str) -> String {
        let mut s = format!(
            "/console/events?q={}&since={}&until={}",
            encode(self.q),
            encode(self.since),
            encode(self.until)
        );
        if self.oldest_first {
            s.push_str("&order=asc");
        }
        s.push_str(extra);
        s
    }
}

/// The events page: the query form, results, the ack form around them, page links.
pub fn events(
    v: &Viewer,
    f: &SearchForm,
    events: &[EventSummary],
    error: Option<&str>,
    more: bool,
    first_page: bool,
    notice: Option<&str>,
) -> Markup {
    let can_ack = v.role >= Role::Analyst;
    let any_waiting = events.iter().any(|e| e.waiting);
    let fleet = v.home == Home::Fleet;
    layout(
        "Events",
        Some(v),
        "Events",
        html! {
            h1 { "Events" }
            form.search method="get" action="/console/events" role="search" {
                label for="q" { "Query" }
                input #q type="search" name="q" value=(f.q) size="60"
                    placeholder="isanomaly:true needsack:true host:pc1 user:adm* -source:lab mimikatz";
                label for="since" { "From" }
                input #since type="text" name="since" value=(f.since) size="14" placeholder="7d or 2026-12-01";
                label for="until" { "Until" }
                input #until type="text" name="until" value=(f.until) size="14" placeholder="now";
                label for="order" { "Order" }
                select #order name="order" {
                    option value="desc" selected[!f.oldest_first] { "newest first" }
                    option value="asc" selected[f.oldest_first] { "oldest first" }
                }
                button type="submit" { "Search" }
            }
            details.help {
                summary { "Query language" }
                p { code { "name:value" } " (a field, " code { "*" } " as wildcard), "
                    code { "isanomaly:true" } ", " code { "needsack:true" } ", " code { "acked:true" } ", "
                    code { "host:" } ", " code { "source:" } ", " code { "filter:" } ", " code { "id:" }
                    ", free text (" code { "\"System Infected\"" } ", " code { "cred*" } "), "
                    code { "-term" } " negates. Times: an age (" code { "30m" } ", " code { "7d" } "), a date or RFC 3339." }
            }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            } @else if events.is_empty() {
                p.empty { "No events match." }
            } @else {
                form method="post" action="/console/ack" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="hidden" name="back" value=(f.link(""));
                    (event_table(events, can_ack && any_waiting, fleet))
                    @if can_ack && any_waiting {
                        fieldset.ack {
                            legend { "Acknowledge the selected events" }
                            label for="comment" { "Comment" }
                            input #comment type="text" name="comment" size="60" maxlength="1000" required;
                            button type="submit" { "Acknowledge selected" }
                        }
                    }
                }
                nav.pages aria-label="Pages" {
                    @if !first_page {
                        a href=(f.link("")) { "First page" }
                    }
                    @if more {
                        @if let Some(last) = events.last() {
                            @if f.oldest_first {
                                a rel="next" href=(f.link(&format!("&after={}", last.id))) { "Next page" }
                            } @else {
                                a rel="next" href=(f.link(&format!("&before={}", last.id))) { "Next page" }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn explanation(x: &ExplainView) -> Markup {
    html! {
        div.explain {
            h3 { "Baseline of " (x.filter) " on " (x.host) }
            dl {
                dt { "Key" }
                dd { @if x.key.is_empty() { "(one baseline per host)" } @else {
                    @for (k, val) in &x.key { code { (k) "=" (val) } " " } } }
                dt { "Learning" }
                dd { (x.learning_started.as_deref().unwrap_or("not started")) " → "
                     (x.learning_ends.as_deref().unwrap_or("?"))
                     @if x.learn_per_key { " (per key)" } }
                @if let Some(f) = &x.key_first_seen { dt { "Key first seen" } dd { (f) } }
                dt { "Values known for the key" }
                dd {
                    @if x.values.is_empty() { "none" } @else {
                        ul { @for (val, first) in &x.values { li { code { (val) } " since " (first) } } }
                    }
                }
            }
        }
    }
}

/// One event with everything known about it, and the ack form.
pub fn event(v: &Viewer, e: &EventDetail, notice: Option<&str>) -> Markup {
    let s = &e.summary;
    layout(
        &format!("Event {}", s.id),
        Some(v),
        "Events",
        html! {
            h1 { "Event " (s.id) " " (flags(s)) }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            dl.facts {
                dt { "Time" } dd { (s.time) }
                dt { "Stored" } dd { (e.stored) }
                dt { "Host" } dd { (s.host) }
                @if let Some((id, name)) = &e.agent {
                    dt { "Agent" } dd { a href=(format!("/console/hosts/{id}")) { (name) } }
                }
                dt { "Source" } dd { (s.source) }
                dt { "Filters and rules matched" } dd { (s.filters.join(", ")) }
                @if let Some(o) = &e.origin { dt { "Read at" } dd { (o) } }
            }
            @if s.anomaly {
                section.anomaly {
                    h2 { "Why it is an anomaly" }
                    p { (e.anomaly_why.as_deref().unwrap_or("(no reason recorded)")) }
                    @for x in &e.explanations { (explanation(x)) }
                    @if e.explanations.is_empty() {
                        p.empty { "The baseline explanation is available on the host's own console (the baselines live on the host)." }
                    }
                }
            }
            section {
                h2 { "Acknowledgement" }
                @if let Some(a) = &e.ack {
                    p.acked { "Acknowledged by " strong { (a.by) } " at " (a.at)
                        @if !a.origin.is_empty() { " (" (a.origin) ")" } }
                    @if !a.comment.is_empty() { blockquote { (a.comment) } }
                } @else if e.needs_ack {
                    p { "Waiting for an acknowledgement." }
                    @if v.role >= Role::Analyst {
                        form.ack method="post" action="/console/ack" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            input type="hidden" name="id" value=(s.id);
                            input type="hidden" name="back" value=(event_link(s.id));
                            label for="comment" { "Comment" }
                            input #comment type="text" name="comment" size="60" maxlength="1000" required;
                            button type="submit" { "Acknowledge" }
                        }
                    } @else {
                        p.note { "Your role (" (v.role.as_str()) ") cannot acknowledge." }
                    }
                } @else {
                    p { "This event does not need an acknowledgement." }
                }
            }
            section {
                h2 { "Fields" }
                table.fields {
                    tbody { @for (k, val) in &e.fields { tr { th scope="row" { (k) } td { (val) } } } }
                }
            }
            section {
                h2 { "Actions" }
                @if e.outcomes.is_empty() { p.empty { "No action handled this event." } } @else {
                    table {
                        thead { tr { th { "Action" } th { "Filter" } th { "At" } th { "Attempt" } th { "Result" } } }
                        tbody { @for o in &e.outcomes { tr {
                            td { (o.action) } td { (o.filter) } td.time { (o.at) }
                            td { @if o.attempt == 0 { "not sent" } @else { (o.attempt) } }
                            td { @if o.ok { span.ok { "ok" } } @else if o.attempt == 0 { } @else { span.failed { "failed" } }
                                @if !o.detail.is_empty() { " " (o.detail) } }
                        } } }
                    }
                }
            }
            section {
                h2 { "Raw record" }
                pre.raw { (e.raw) }
            }
        },
    )
}

/// The audit log.
pub fn audit(v: &Viewer, rows: &[AuditRow], more: bool) -> Markup {
    layout(
        "Audit log",
        Some(v),
        "Audit log",
        html! {
            h1 { "Audit log" }
            @if rows.is_empty() { p.empty { "Nothing recorded yet." } } @else {
                table.audit {
                    thead { tr { th { "When" } th { "Who" } th { "What" } th { "On" } th { "Details" } } }
                    tbody { @for r in rows { tr {
                        td.time { (r.at) } td { (r.actor) } td { (r.action) }
                        td { @if let Some(id) = r.target.strip_prefix("event ") {
                                a href=(format!("/console/events/{id}")) { (r.target) }
                             } @else { (r.target) } }
                        td.detail { (r.detail) }
                    } } }
                }
                @if more { @if let Some(last) = rows.last() {
                    nav.pages aria-label="Pages" { a rel="next" href=(format!("/console/audit?before={}", last.id)) { "Older entries" } }
                } }
            }
        },
    )
}

/// The host list.
pub fn hosts(v: &Viewer, rows: &[HostRow]) -> Markup {
    layout(
        "Hosts",
        Some(v),
        "Hosts",
        html! {
            h1 { "Hosts" }
            @if rows.is_empty() { p.empty { "No host has enrolled yet." } } @else {
                table.hosts {
                    thead { tr { th { "Host" } th { "Group" } th { "Version" } th { "Generation" } th { "Last heartbeat" } th { "State" } th { "Problems" } } }
                    tbody { @for h in rows { tr {
                        td { a href=(format!("/console/hosts/{}", encode(&h.id))) { (h.name) } }
                        td { (h.group) } td { (h.version) } td { code { (h.generation) } }
                        td.time { (h.last_seen.as_deref().unwrap_or("never")) }
                        td { span class=(format!("state {}", h.state)) { (h.state) } }
                        td { @if h.problems.is_empty() { span.ok { "none" } } @else {
                            ul { @for p in &h.problems { li { (p) } } } } }
                    } } }
                }
            }
        },
    )
}

fn time_ms(ms: Option<i64>) -> String {
    ms.map(crate::backend::rfc3339)
        .unwrap_or_else(|| "never".into())
}

/// A host's page.
pub fn host(v: &Viewer, h: &HostDetail) -> Markup {
    let r = &h.row;
    layout(
        &r.name,
        Some(v),
        "Hosts",
        html! {
            h1 { (r.name) " " span class=(format!("state {}", r.state)) { (r.state) } }
            dl.facts {
                @if !r.group.is_empty() { dt { "Group" } dd { (r.group) } }
                dt { "Version" } dd { (r.version) }
                dt { "Configuration generation" } dd { code { (r.generation) } }
                dt { "Last heartbeat" } dd { (r.last_seen.as_deref().unwrap_or("never")) }
                dt { "Problems" } dd { @if r.problems.is_empty() { "none" } @else { (r.problems.join("; ")) } }
            }
            p { a href=(format!("/console/events?q={}", encode(&format!("host:\"{}\"", r.name)))) { "Events of this host" } }
            @if !h.diagnostics.is_empty() {
                section { h2 { "Configuration diagnostics" } ul { @for d in &h.diagnostics { li { code { (d) } } } } }
            }
            @if let Some(hb) = &h.heartbeat {
                section {
                    h2 { "Quarantine" }
                    @if let Some(q) = &hb.quarantine {
                        p.failed { "Quarantined since " (time_ms(Some(q.since_ms))) ": " (q.reason)
                            @if let Some(u) = q.until_ms { " (until " (time_ms(Some(u))) ")" } }
                    } @else { p { "Not quarantined." } }
                }
                section {
                    h2 { "Sources" }
                    table { thead { tr { th { "Source" } th { "Records" } th { "Errors" } th { "Last record" } } }
                        tbody { @for s in &hb.sources { tr { td { (s.name) } td { (s.records) } td { (s.errors) } td.time { (time_ms(s.last_record_ms)) } } } } }
                }
                section {
                    h2 { "Actions" }
                    table { thead { tr { th { "Action" } th { "Type" } th { "Done" } th { "Failed" } th { "Dropped" } th { "Queued" } th { "Retry queue" } } }
                        tbody { @for a in &hb.actions { tr { td { (a.name) } td { (a.kind) } td { (a.ok) } td { (a.failed) } td { (a.dropped) } td { (a.queued) } td { (a.durable_queued) } } } } }
                }
                section {
                    h2 { "Checks" }
                    @if hb.checks.is_empty() { p.empty { "No checks configured." } } @else {
                        table { thead { tr { th { "Check" } th { "Status" } th { "Detail" } } }
                            tbody { @for c in &hb.checks { tr { td { (c.name) }
                                td { span class=(if c.status == "ok" { "ok" } else { "failed" }) { (c.status) } } td { (c.detail) } } } } }
                    }
                }
                section {
                    h2 { "Store and shipping" }
                    dl.facts {
                        dt { "Events stored" } dd { (hb.store.stored) }
                        dt { "Dropped / failed" } dd { (hb.store.dropped) " / " (hb.store.failed) }
                        @if v.home == Home::Fleet {
                            dt { "Waiting to ship" } dd { (hb.shipping.pending) }
                            dt { "Never shipped" } dd { (hb.shipping.dropped) }
                        }
                        @if let Some(p) = hb.baseline_pairs { dt { "Baseline pairs" } dd { (p) } }
                    }
                }
            } @else {
                p.empty { "No heartbeat received yet." }
            }
            @if !h.baselines.is_empty() {
                section { h2 { "Baselines" } (baseline_table(&h.baselines)) }
            }
            @if v.home == Home::Fleet {
                section {
                    h2 { "Commands" }
                    @if h.commands.is_empty() { p.empty { "No commands were sent to this host." } } @else {
                        table { thead { tr { th { "#" } th { "Command" } th { "By" } th { "At" } th { "Result" } } }
                            tbody { @for c in &h.commands { tr { td { (c.id) } td { (c.kind) } td { (c.by) } td.time { (c.at) } td { (c.result) } } } } }
                    }
                }
            }
        },
    )
}

fn baseline_table(rows: &[BaselineRow]) -> Markup {
    html! {
        table.baselines {
            thead { tr { th { "Filter" } th { "Host" } th { "State" } th { "Learning started" } th { "Learning ends" } th { "Keys" } th { "Pairs" } } }
            tbody { @for b in rows { tr {
                td { (b.filter) } td { (b.host) } td { span class=(format!("state {}", b.state)) { (b.state) } }
                td.time { (b.learning_started.as_deref().unwrap_or("")) }
                td.time { (b.learning_ends.as_deref().unwrap_or("")) }
                td { (b.keys) } td { (b.pairs) }
            } } }
        }
    }
}

/// The baselines page, with the explain form and its answer.
pub fn baselines(
    v: &Viewer,
    rows: &[BaselineRow],
    form: (&str, &str, &str),
    answer: Option<Result<&ExplainView, &str>>,
    export: bool,
) -> Markup {
    let (filter, host, key) = form;
    layout(
        "Baselines",
        Some(v),
        "Baselines",
        html! {
            h1 { "Baselines" }
            @if rows.is_empty() { p.empty { "No anomaly baselines (no anomaly filter has seen an event yet)." } }
            @else { (baseline_table(rows)) }
            @if export { p { a href="/console/baselines/export" download="baselines.jsonl" { "Export (JSON lines)" } } }
            section {
                h2 { "Explain a key" }
                form.explain method="get" action="/console/baselines" {
                    label for="filter" { "Filter" }
                    input #filter type="text" name="filter" value=(filter) required;
                    label for="host" { "Host" }
                    input #host type="text" name="host" value=(host) required;
                    label for="key" { "Key values (comma-separated, in key order)" }
                    input #key type="text" name="key" value=(key);
                    button type="submit" { "Explain" }
                }
                @match answer {
                    Some(Ok(x)) => (explanation(x)),
                    Some(Err(m)) => p.error role="alert" { (m) },
                    None => (PreEscaped(String::new())),
                }
            }
        },
    )
}

/// The style sheet (served from this origin: the CSP allows no inline style).
pub const CSS: &str = include_str!("console.css");
