//! The pages, as maud templates compiled into the binary. Every value spliced with
//! `(…)` is HTML-escaped by maud; nothing is inserted raw except the markup built here.
//! Forms work without script; controls are labelled; the layout reads at 1280×800.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::backend::{
    AuditRow, BaselineRow, ConfigText, Diagnostic, EventDetail, EventSummary, ExplainView,
    GroupDetail, GroupRow, Home, HostDetail, HostPage, HostQuery, Overview, Role, VersionView,
};
use crate::chart;
use crate::diff;
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
                                ("/console/groups", "Groups"),
                                ("/console/baselines", "Baselines"),
                                ("/console/audit", "Audit log"),
                            ].into_iter().filter(|(_, n)| fleet || *n != "Groups") {
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
/// The hosts page: a filter (name, group, needing attention) and one page of hosts by
/// name; `groups` for the group list.
pub fn hosts(v: &Viewer, q: &HostQuery, page: &HostPage, groups: &[String]) -> Markup {
    let filtered = !q.name.is_empty() || !q.group.is_empty() || q.attention;
    let rows = &page.rows;
    let next = rows.last().filter(|_| page.more).map(|last| {
        let mut link = format!("/console/hosts?after={}", encode(&last.id));
        for (k, val) in [("name", q.name.as_str()), ("group", q.group.as_str())] {
            if !val.is_empty() {
                link.push_str(&format!("&{k}={}", encode(val)));
            }
        }
        if q.attention {
            link.push_str("&attention=1");
        }
        link
    });
    layout(
        "Hosts",
        Some(v),
        "Hosts",
        html! {
            h1 { "Hosts" }
            form.search method="get" action="/console/hosts" role="search" {
                label for="name" { "Name" }
                input #name type="search" name="name" value=(q.name) size="24" placeholder="part of a host name";
                label for="group" { "Group" }
                select #group name="group" {
                    option value="" selected[q.group.is_empty()] { "all groups" }
                    @for g in groups { option value=(g) selected[*g == q.group] { (g) } }
                }
                label for="attention" { "Needing attention only" }
                input #attention type="checkbox" name="attention" value="1" checked[q.attention];
                button type="submit" { "Show" }
            }
            @if rows.is_empty() {
                p.empty { @if filtered || q.after.is_some() { "No host matches." } @else { "No host has enrolled yet." } }
            } @else {
                p.count { (page.total) " host" @if page.total != 1 { "s" }
                    @if filtered { " match" @if page.total == 1 { "es" } } ", by name" @if q.after.is_some() { " (a later page)" } "." }
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
                @if let Some(link) = next {
                    nav.pages aria-label="Pages" { a rel="next" href=(link) { "Next page" } }
                }
            }
        },
    )
}

fn time_ms(ms: Option<i64>) -> String {
    ms.map(crate::backend::rfc3339)
        .unwrap_or_else(|| "never".into())
}

/// A host's page; `notice`: what the last form did.
pub fn host(v: &Viewer, h: &HostDetail, notice: Option<&str>) -> Markup {
    let r = &h.row;
    let fleet = v.home == Home::Fleet;
    let can_command = fleet && v.role >= Role::Analyst;
    // The agent's console releases its own quarantine (the agent's quarantine API).
    let can_release = v.role >= Role::Analyst;
    let command_action = format!("/console/hosts/{}/command", encode(&r.id));
    layout(
        &r.name,
        Some(v),
        "Hosts",
        html! {
            h1 { (r.name) " " span class=(format!("state {}", r.state)) { (r.state) } }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
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
                        @if can_release {
                            form.release method="post" action=(command_action) {
                                input type="hidden" name="csrf" value=(v.csrf);
                                input type="hidden" name="kind" value="quarantine_release";
                                label for="release-reason" { "Reason" }
                                input #release-reason type="text" name="reason" size="50" maxlength="1000"
                                    placeholder="released from the console";
                                button type="submit" { "Release quarantine" }
                            }
                        } @else {
                            p.note { "Your role (" (v.role.as_str()) ") cannot release a quarantine; an analyst or admin can." }
                        }
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
            @if fleet {
                section {
                    h2 { "Send a command" }
                    @if can_command {
                        (command_form(v, &command_action))
                    } @else {
                        p.note { "Your role (" (v.role.as_str()) ") cannot send commands; an analyst or admin can." }
                    }
                }
                section {
                    h2 { "Commands" }
                    @if h.commands.is_empty() { p.empty { "No commands were sent to this host." } } @else {
                        table.commands { thead { tr { th { "#" } th { "Command" } th { "Details" } th { "By" } th { "At" } th { "Result" } } }
                            tbody { @for c in &h.commands { tr { td { (c.id) } td { (c.kind) } td { (c.detail) } td { (c.by) } td.time { (c.at) } td { (c.result) } } } } }
                    }
                }
            }
        },
    )
}

/// The form that sends a command (to a host, or to every host of a group). Its `request`
/// field is new with each page, so a form sent twice (a double click, a resubmission)
/// sends the command once.
fn command_form(v: &Viewer, action: &str) -> Markup {
    html! {
        form.command method="post" action=(action) {
            input type="hidden" name="csrf" value=(v.csrf);
            input type="hidden" name="request" value=(crate::auth::request_nonce());
            label for="kind" { "Command" }
            select #kind name="kind" {
                option value="run_checks" { "run checks now" }
                option value="reload" { "reload the configuration" }
                option value="quarantine_apply" { "apply quarantine" }
                option value="quarantine_release" { "release quarantine" }
                option value="run_action" { "run an action" }
            }
            label for="reason" { "Reason (quarantine)" }
            input #reason type="text" name="reason" size="40" maxlength="1000";
            label for="action" { "Action (run an action; which quarantine action)" }
            input #action type="text" name="action" size="30" maxlength="200";
            label for="fields" { "Event fields for the action, one " code { "name=value" } " a line" }
            textarea #fields name="fields" rows="4" cols="60" spellcheck="false" placeholder="path=C:\\Users\\x\\evil.exe" {}
            button type="submit" { "Send command" }
        }
    }
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

fn group_link(name: &str) -> String {
    format!("/console/groups/{}", encode(name))
}

/// The groups list (fleet).
pub fn groups(v: &Viewer, rows: &[GroupRow]) -> Markup {
    layout(
        "Groups",
        Some(v),
        "Groups",
        html! {
            h1 { "Groups" }
            @if rows.is_empty() { p.empty { "No group exists yet (" code { "watchpost-server group add NAME" } ")." } } @else {
                table.groups {
                    thead { tr { th { "Group" } th { "Description" } th { "Published version" } th { "Hosts" }
                        th { "On it" } th { "Behind" } th { "Rejecting" } } }
                    tbody { @for g in rows { tr {
                        td { a href=(group_link(&g.name)) { (g.name) } }
                        td { (g.description) }
                        td { @match g.published {
                            Some(p) => { "version " (p)
                                @if let (Some(by), Some(at)) = (&g.published_by, &g.published_at) { span.note { " by " (by) ", " (at) } } }
                            None => span.note { "none (hosts run their own files)" },
                        } }
                        td { (g.hosts) }
                        td { span.ok { (g.current) } }
                        td { @if g.behind > 0 { span.waiting { (g.behind) } } @else { (g.behind) } }
                        td { @if g.rejecting > 0 { span.failed { (g.rejecting) } } @else { (g.rejecting) } }
                    } } }
                }
            }
        },
    )
}

/// The editor's state on a group page.
pub struct Editor<'a> {
    /// The version the text started from (its files are kept).
    pub base: Option<i32>,
    /// The text.
    pub text: &'a str,
    /// The comment.
    pub comment: &'a str,
    /// The files kept from the base version, by name.
    pub files: &'a BTreeMap<String, String>,
    /// When a publication was refused: its diagnostics.
    pub refused: Option<&'a [Diagnostic]>,
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// A text with line numbers; lines a diagnostic points at (`at`: its line in this text,
/// if any) are marked and followed by its message.
fn listing(text: &str, diags: &[Diagnostic], at: impl Fn(&Diagnostic) -> Option<usize>) -> Markup {
    html! {
        table.listing {
            tbody {
                @for (i, line) in text.lines().enumerate() {
                    @let n = i + 1;
                    @let here: Vec<&Diagnostic> = diags.iter().filter(|d| at(d) == Some(n)).collect();
                    tr id=(format!("L{n}")) class=(if here.is_empty() { "" } else { "bad" }) {
                        td.ln { (n) }
                        td.code { (line) }
                    }
                    @for d in here {
                        tr.diag {
                            td.ln { }
                            td { span class=(d.severity) { (d.place()) ": " (d.severity) } ": " (first_line(&d.message)) }
                        }
                    }
                }
            }
        }
    }
}

/// Where a diagnostic points in `group.toml`.
fn in_config(d: &Diagnostic) -> Option<usize> {
    d.line.filter(|_| d.in_config())
}

/// The list of a refused publication's diagnostics; those at a line of the text shown
/// (`at`) link to it.
fn diagnostic_list(diags: &[Diagnostic], at: impl Fn(&Diagnostic) -> Option<usize>) -> Markup {
    html! {
        ul.diagnostics {
            @for d in diags {
                li {
                    @if let Some(l) = at(d) {
                        a href=(format!("#L{l}")) { code { (d.place()) } }
                    } @else { code { (d.place()) } }
                    " " span class=(d.severity) { (d.severity) } ": " (first_line(&d.message))
                }
            }
        }
    }
}

/// The page of one file of a version: `…/versions/N/files/NAME`.
fn file_link(group: &str, version: i32, name: &str) -> String {
    let path: Vec<String> = name.split('/').map(encode).collect();
    format!(
        "{}/versions/{version}/files/{}",
        group_link(group),
        path.join("/")
    )
}

/// A version's files: each with its page (view, and edit for an admin), its size, and
/// for an admin a button that publishes the version without it.
fn file_table(v: &Viewer, group: &str, version: i32, files: &BTreeMap<String, String>) -> Markup {
    let admin = v.role >= Role::Admin;
    html! {
        table.files {
            thead { tr { th { "File" } th { "Bytes" } th { "Lines" } @if admin { th { span.sr { "Remove" } } } } }
            tbody { @for (name, content) in files { tr {
                td { a href=(file_link(group, version, name)) { code { (name) } } }
                td { (content.len()) }
                td { (content.lines().count()) }
                @if admin {
                    td {
                        form.inline method="post" action=(format!("{}/files", group_link(group))) {
                            input type="hidden" name="csrf" value=(v.csrf);
                            input type="hidden" name="op" value="remove";
                            input type="hidden" name="base" value=(version);
                            input type="hidden" name="name" value=(name);
                            button type="submit" aria-label=(format!("Remove {name} and publish")) { "Remove and publish" }
                        }
                    }
                }
            } } }
        }
    }
}

/// The form that adds a file to a version and publishes it.
fn add_file_form(v: &Viewer, group: &str, version: i32) -> Markup {
    html! {
        form.publish.addfile method="post" action=(format!("{}/files", group_link(group))) {
            input type="hidden" name="csrf" value=(v.csrf);
            input type="hidden" name="op" value="add";
            input type="hidden" name="base" value=(version);
            label for="new-name" { "File name (a relative path, e.g. " code { "rules/my_rule.yml" } ")" }
            input #new-name type="text" name="name" size="60" maxlength="255" required
                pattern="[A-Za-z0-9._/-]+" placeholder="rules/my_rule.yml";
            label for="new-content" { "Content" }
            textarea #new-content name="content" rows="12" cols="100" spellcheck="false" required { }
            label for="new-comment" { "Comment (why)" }
            input #new-comment type="text" name="comment" size="80" maxlength="1000";
            button type="submit" { "Check and publish" }
        }
    }
}

fn version_row(v: &Viewer, group: &str, x: &VersionView, previous: Option<i32>) -> Markup {
    let base = group_link(group);
    html! {
        tr {
            td { a href=(format!("{base}/versions/{}", x.version)) { "version " (x.version) } }
            td { @if x.published { span.tag.acked { "published" } } }
            td { (x.by) } td.time { (x.at) } td { (x.comment) }
            td { (x.applied) } td { @if x.refused > 0 { span.failed { (x.refused) } } @else { (x.refused) } }
            td { @if let Some(p) = previous { a href=(format!("{base}/diff?from={p}&to={}", x.version)) { "changes from " (p) } } }
            td {
                @if v.role >= Role::Admin && !x.published {
                    form.inline method="post" action=(format!("{base}/rollback")) {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input type="hidden" name="version" value=(x.version);
                        button type="submit" { "Roll back to " (x.version) }
                    }
                }
            }
        }
    }
}

/// A group: its hosts' configuration state, its versions, comparing two, the editor.
pub fn group(v: &Viewer, g: &GroupDetail, editor: &Editor, notice: Option<&str>) -> Markup {
    let r = &g.row;
    let base = group_link(&r.name);
    let versions: Vec<i32> = g.versions.iter().map(|x| x.version).collect();
    let refused = editor.refused.is_some();
    let edit = html! {
            section #edit {
                h2 { "Edit and publish" }
                @if v.role < Role::Admin {
                    p.note { "Your role (" (v.role.as_str()) ") cannot publish configuration; an admin can." }
                } @else {
                    @if let Some(diags) = editor.refused {
                        p.error role="alert" { "The configuration has errors; nothing was published. Correct the marked lines and publish again." }
                        (diagnostic_list(diags, in_config))
                        (listing(editor.text, diags, in_config))
                    }
                    form.publish method="post" action=(format!("{base}/publish")) {
                        input type="hidden" name="csrf" value=(v.csrf);
                        @if let Some(b) = editor.base { input type="hidden" name="base" value=(b); }
                        label for="config" {
                            "Configuration (" code { "group.toml" } ")"
                            @if let Some(b) = editor.base { ", starting from version " (b) }
                        }
                        // The parser drops one newline right after the start tag: this one, so a
                        // text that starts with a newline keeps it.
                        textarea #config name="config" rows="22" cols="100" spellcheck="false" required { "\n" (editor.text) }
                        @if !editor.files.is_empty() {
                            p.note { "Kept as they are in version " (editor.base.map(|b| b.to_string()).unwrap_or_default()) ": "
                                @for (i, (f, content)) in editor.files.iter().enumerate() { @if i > 0 { ", " } code { (f) } " (" (content.len()) " bytes)" } }
                        }
                        label for="comment" { "Comment (why)" }
                        input #comment type="text" name="comment" size="80" maxlength="1000" value=(editor.comment);
                        button type="submit" { "Check and publish" }
                    }
                    @if let Some(b) = editor.base {
                        h3 #files { "Rule and placeholder files of version " (b) }
                        p.note { "Open a file to edit it. Each change (an edit, a new file, a removal) is checked like the configuration and published as the next version; a rule file that does not load is refused with its reason." }
                        @if editor.files.is_empty() { p.empty { "Version " (b) " has no files." } }
                        @else { (file_table(v, &r.name, b, editor.files)) }
                        h3 { "Add a file" }
                        (add_file_form(v, &r.name, b))
                    }
                }
            }
    };
    layout(
        &format!("Group {}", r.name),
        Some(v),
        "Groups",
        html! {
            h1 { "Group " (r.name) }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            // A refused publication is answered with the editor first: the diagnostics
            // and the marked lines are what the admin came back to.
            @if refused { (edit) }
            dl.facts {
                @if !r.description.is_empty() { dt { "Description" } dd { (r.description) } }
                dt { "Published version" }
                dd { @match r.published {
                    Some(p) => { a href=(format!("{base}/versions/{p}")) { "version " (p) }
                        @if let (Some(by), Some(at)) = (&r.published_by, &r.published_at) { " by " (by) " at " (at) } }
                    None => "none: the hosts run their own configuration files",
                } }
                dt { "Hosts" } dd { (r.hosts) " — " (r.current) " on the published version, " (r.behind) " behind, " (r.rejecting) " rejecting it" }
            }
            section {
                h2 { "Hosts and their configuration" }
                @if g.hosts.is_empty() { p.empty { "No host is in this group." } } @else {
                    table.hostconfig {
                        thead { tr { th { "Host" } th { "Version handled" } th { "State" } th { "Reloads" } th { "Running generation" } th { "Reported" } th { "Why refused" } } }
                        tbody { @for h in &g.hosts { tr {
                            td { a href=(format!("/console/hosts/{}", encode(&h.id))) { (h.name) } }
                            td { @match h.version { Some(x) => { "version " (x) }, None => span.note { "none yet" } } }
                            td { @match (h.ok, h.version == r.published) {
                                (Some(false), _) => span.failed { "refused" },
                                (Some(true), true) => span.ok { "runs the published version" },
                                (Some(true), false) => span.waiting { "runs another version, not the published one" },
                                (None, _) if r.published.is_none() => span.note { "nothing published: runs its own files" },
                                (None, _) => span.waiting { "not received yet" },
                            } }
                            td { @if let Some(x) = h.generation { (x) } }
                            td { @if let Some(x) = &h.running { code { (x) } } }
                            td.time { (h.reported_at.as_deref().unwrap_or("")) }
                            td { @if let Some(e) = &h.error { pre.diagnostics { (e) } } }
                        } } }
                    }
                }
            }
            section {
                h2 { "Send a command to every host of the group" }
                @if v.role >= Role::Analyst {
                    (command_form(v, &format!("{base}/command")))
                } @else {
                    p.note { "Your role (" (v.role.as_str()) ") cannot send commands; an analyst or admin can." }
                }
            }
            section {
                h2 { "Versions" }
                @if g.versions.is_empty() { p.empty { "No configuration has been published for this group yet." } } @else {
                    table.versions {
                        thead { tr { th { "Version" } th { } th { "By" } th { "When" } th { "Comment" } th { "Hosts running it" } th { "Refused" } th { "Difference" } th { } } }
                        tbody { @for (i, x) in g.versions.iter().enumerate() {
                            (version_row(v, &r.name, x, g.versions.get(i + 1).map(|p| p.version)))
                        } }
                    }
                    @if versions.len() > 1 {
                        form.compare method="get" action=(format!("{base}/diff")) {
                            label for="from" { "Compare version" }
                            select #from name="from" { @for (i, x) in versions.iter().enumerate() { option value=(x) selected[i == 1] { (x) } } }
                            label for="to" { "with version" }
                            select #to name="to" { @for (i, x) in versions.iter().enumerate() { option value=(x) selected[i == 0] { (x) } } }
                            button type="submit" { "Show the difference" }
                        }
                    }
                }
            }
            @if !refused { (edit) }
        },
    )
}

/// One version's text.
pub fn version(
    v: &Viewer,
    group: &str,
    x: &VersionView,
    c: &ConfigText,
    previous: Option<i32>,
) -> Markup {
    let base = group_link(group);
    layout(
        &format!("{group} version {}", x.version),
        Some(v),
        "Groups",
        html! {
            h1 { a href=(base) { (group) } " · version " (x.version) " "
                @if x.published { span.tag.acked { "published" } } }
            dl.facts {
                dt { "Stored by" } dd { (x.by) " at " (x.at) }
                dt { "Comment" } dd { (x.comment) }
                dt { "Digest" } dd { code { (x.digest) } }
                dt { "Hosts" } dd { (x.applied) " run it, " (x.refused) " refused it" }
                dt { "Files" } dd { @if c.files.is_empty() { "none" } @else {
                    @for (i, (f, content)) in c.files.iter().enumerate() { @if i > 0 { ", " }
                        a href=(file_link(group, x.version, f)) { code { (f) } } " (" (content.len()) " bytes)" } } }
            }
            nav.pages aria-label="Version" {
                @if let Some(p) = previous { a href=(format!("{base}/diff?from={p}&to={}", x.version)) { "Changes from version " (p) } }
                @if v.role >= Role::Admin { a href=(format!("{base}?edit={}#edit", x.version)) { "Edit from this version" } }
            }
            @if v.role >= Role::Admin && !x.published {
                form.inline method="post" action=(format!("{base}/rollback")) {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="hidden" name="version" value=(x.version);
                    button type="submit" { "Roll back to version " (x.version) }
                }
            }
            h2 { code { "group.toml" } }
            (listing(&c.text, &[], |_| None))
        },
    )
}

/// Unchanged lines shown around a change; longer unchanged runs are folded.
const CONTEXT: usize = 3;

/// The lines of one text's difference: a table of the changed lines with CONTEXT
/// unchanged ones around each change (longer unchanged runs folded), and the lines added
/// and removed.
fn diff_table(from: i32, to: i32, old: &str, new: &str) -> (Markup, usize, usize) {
    let d = diff::lines(old, new);
    let (added, removed) = diff::counts(&d);
    let near = |i: usize| {
        !matches!(d[i], diff::Line::Same(..))
            || d[i.saturating_sub(CONTEXT)..(i + CONTEXT + 1).min(d.len())]
                .iter()
                .any(|l| !matches!(l, diff::Line::Same(..)))
    };
    let mut rows: Vec<Result<&diff::Line, usize>> = Vec::new();
    for (i, l) in d.iter().enumerate() {
        if near(i) {
            rows.push(Ok(l));
        } else if let Some(Err(n)) = rows.last_mut() {
            *n += 1;
        } else {
            rows.push(Err(1));
        }
    }
    let table = html! {
        table.diff {
            thead { tr { th { "v" (from) } th { "v" (to) } th { span.sr { "change" } } th { "line" } } }
            tbody {
                @for row in &rows {
                    @match row {
                        Err(n) => tr.fold { td colspan="4" { "… " (n) " unchanged line(s)" } },
                        Ok(diff::Line::Same(a, b, t)) => tr.same { td.ln { (a) } td.ln { (b) } td { } td.code { (t) } },
                        Ok(diff::Line::Removed(a, t)) => tr.del { td.ln { (a) } td.ln { } td { "−" } td.code { (t) } },
                        Ok(diff::Line::Added(b, t)) => tr.add { td.ln { } td.ln { (b) } td { "+" } td.code { (t) } },
                    }
                }
            }
        }
    };
    (table, added, removed)
}

/// The difference between two versions: `group.toml`'s lines, then each file that was
/// added, removed or changed, line by line.
pub fn difference(v: &Viewer, group: &str, from: &ConfigText, to: &ConfigText) -> Markup {
    let base = group_link(group);
    let (toml, added, removed) = diff_table(from.version, to.version, &from.text, &to.text);
    let mut names: Vec<&String> = from.files.keys().chain(to.files.keys()).collect();
    names.sort_unstable();
    names.dedup();
    // (name, what happened, its lines' table, added, removed) for each file that differs.
    let files: Vec<(&str, &str, Markup, usize, usize)> = names
        .into_iter()
        .filter_map(|n| {
            let (old, new) = (from.files.get(n), to.files.get(n));
            if old == new {
                return None;
            }
            let what = match (old, new) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "changed",
            };
            let (t, a, r) = diff_table(
                from.version,
                to.version,
                old.map_or("", String::as_str),
                new.map_or("", String::as_str),
            );
            Some((n.as_str(), what, t, a, r))
        })
        .collect();
    layout(
        &format!("{group}: version {} → {}", from.version, to.version),
        Some(v),
        "Groups",
        html! {
            h1 { a href=(base) { (group) } " · version " (from.version) " → " (to.version) }
            p.summary { span.add { "+" (added) } " " span.del { "−" (removed) } " lines in " code { "group.toml" }
                @if files.is_empty() { "; the files are the same" } @else {
                    "; files that differ: "
                    @for (i, (n, what, _, a, r)) in files.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href=(format!("#file-{}", encode(n))) { code { (n) } } " (" (what) ", +" (a) " −" (r) ")"
                    }
                } }
            h2 { code { "group.toml" } }
            @if added == 0 && removed == 0 {
                p.empty { "The two texts are the same." }
            } @else {
                (toml)
            }
            @for (n, what, table, _, _) in &files {
                h2 id=(format!("file-{}", encode(n))) { code { (n) } " " span.tag { (what) } }
                (table)
            }
        },
    )
}

/// The file editor's state on a file's page.
pub struct FileEditor<'a> {
    /// The version the file is from (and the change starts from).
    pub base: i32,
    /// The file's name.
    pub name: &'a str,
    /// Its text (as stored, or as submitted).
    pub text: &'a str,
    /// The comment.
    pub comment: &'a str,
    /// A new file (its name may still change).
    pub adding: bool,
    /// When a publication was refused: its diagnostics.
    pub refused: Option<&'a [Diagnostic]>,
}

/// One file of a version, with line numbers; for an admin, the form to edit it and
/// publish the change (or, refused, the diagnostics at the file and its lines).
pub fn file(v: &Viewer, group: &str, version: Option<&VersionView>, e: &FileEditor) -> Markup {
    let base = group_link(group);
    let name = e.name;
    let at_file = |d: &Diagnostic| d.about_file(name).flatten();
    let about: Vec<&Diagnostic> = e
        .refused
        .unwrap_or(&[])
        .iter()
        .filter(|d| d.about_file(name).is_some())
        .collect();
    layout(
        &format!("{group} version {}: {name}", e.base),
        Some(v),
        "Groups",
        html! {
            h1 { a href=(base) { (group) } " · " a href=(format!("{base}/versions/{}", e.base)) { "version " (e.base) } " · " code { (name) }
                @if version.is_some_and(|x| x.published) { " " span.tag.acked { "published" } }
                @if e.adding { " " span.tag { "new" } } }
            @if let Some(diags) = e.refused {
                p.error role="alert" {
                    @if about.is_empty() { "The version has errors; nothing was published. Correct them and publish again." }
                    @else { "This file does not load; nothing was published. Correct it and publish again." }
                }
                @for d in &about {
                    p.diag.filediag { code { (name) @if let Some(l) = at_file(d) { ":" (l) } } ": " span class=(d.severity) { (d.severity) } ": " (first_line(&d.message)) }
                }
                (diagnostic_list(diags, at_file))
            }
            p.note { (e.text.len()) " bytes, " (e.text.lines().count()) " lines" }
            (listing(e.text, e.refused.unwrap_or(&[]), at_file))
            @if v.role >= Role::Admin {
                h2 #edit { @if e.adding { "Add and publish" } @else { "Edit and publish" } }
                form.publish.file method="post" action=(format!("{base}/files")) {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="hidden" name="op" value=(if e.adding { "add" } else { "save" });
                    input type="hidden" name="base" value=(e.base);
                    @if e.adding {
                        label for="new-name" { "File name" }
                        input #new-name type="text" name="name" size="60" maxlength="255" required value=(name);
                    } @else {
                        input type="hidden" name="name" value=(name);
                    }
                    label for="content" { code { (name) } ", starting from version " (e.base) }
                    // The parser drops one newline right after the start tag: this one.
                    textarea #content name="content" rows="24" cols="100" spellcheck="false" required { "\n" (e.text) }
                    label for="file-comment" { "Comment (why)" }
                    input #file-comment type="text" name="comment" size="80" maxlength="1000" value=(e.comment);
                    button type="submit" { "Check and publish" }
                }
            } @else {
                p.note { "Your role (" (v.role.as_str()) ") cannot publish configuration; an admin can." }
            }
        },
    )
}

/// The style sheet (served from this origin: the CSP allows no inline style).
pub const CSS: &str = include_str!("console.css");
