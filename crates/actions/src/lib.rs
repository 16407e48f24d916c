//! watchpost actions: what happens when a filter fires, run off the hot path.
//!
//! An action is configured as an `[[action]]` table. [`parse_action`] turns one table
//! (as a spanned `toml` value) into an [`ActionSpec`], reporting every mistake with its
//! byte range; [`ActionSpec::check`] adds the checks that look at the file system, and
//! [`ActionSpec::variables`] lists the template variables with their places so
//! `check-config` can reject names no event will ever have.
//!
//! [`Dispatcher::start`] gives every action a bounded queue and its own worker thread
//! (`run` gets a small pool). The pipeline hands over work with [`Dispatcher::submit`],
//! which never blocks: a full queue drops the job and counts it. Workers wait on their
//! queue (no polling), render into reused buffers and deliver; counters are read with
//! [`Dispatcher::stats`] and, finally, [`Dispatcher::shutdown`].
//!
//! Templates (`{{ field }}`, see [`watchpost_event::Template`]) can name any event field,
//! the metadata (`source`, `host`, `time`, `raw`, `anomaly`) and, in actions, `filter`
//! (the filter that fired) and `actions` (its actions, comma-separated). No action ever
//! runs a shell.
//!
//! # Keys common to every action
//!
//! | key | meaning |
//! |---|---|
//! | `name` | required; letters, digits, `-`, `_`, `.`; what filters list in `actions` |
//! | `type` | required; `syslog`, `run`, `scan`, `flag_file`, `jsonl_file`, `registry` (Windows), `dialog`, `open_url`, `webhook`, `email` or `quarantine` |
//! | `queue_capacity` | jobs that may wait before new ones are dropped (syslog and jsonl_file 10000, others 1000) |
//! | `retry` | actions with a retry queue only: `{ max_attempts = 0 (unlimited), max_age = "24h" ("0": unlimited), initial_backoff = "1s", max_backoff = "5m", max_queue = "1GiB" (bytes the queue may hold; new jobs beyond are dropped and counted) }` |
//! | `durable` | `true` (actions with a retry queue only): keep the queue under `<state_dir>/queue/<name>/`; `false`: in memory |
//! | `throttle` | `{ key = "{{ filter }}", count = 1, per = "1h" }`: at most `count` jobs per rendered key per window |
//! | `dedupe` | `{ key = "{{ filter }}\|{{ raw }}", within = "10m" }`: one job per rendered key within the window |
//!
//! The common keys (with `name`, `type` and `queue_capacity`) are taken out of the table
//! and checked once (`config.rs`) before the type's own parser (with
//! `deny_unknown_fields`) sees the rest. Every type implements one trait, `ActionKind`,
//! and is listed once in `kind.rs`'s table; the helpers they share (templates with their
//! place, bounded numbers, durations) are the leaf module `kit.rs`.
//!
//! # Delivery that survives failures
//!
//! A kind whose delivery can fail for a while has a deliverer (`ActionKind::deliverer`,
//! `kind.rs`; the contract is `delivery.rs`): syslog over TCP and
//! TLS, `webhook`, `email`, `run` with `retry`/`retry_exit_codes`. Its single worker runs the durable loop
//! (`durable.rs`): jobs are taken off the channel (so [`Dispatcher::submit`] stays a
//! `try_send`), checked against throttle/dedupe (`limits.rs`), appended to the action's
//! on-disk FIFO (`queue.rs`: CRC'd length-prefixed records in segment files plus a cursor)
//! and delivered head first; a transient failure waits an exponential back-off with jitter
//! and tries the same job again (order kept), a permanent one or an expired `max_attempts`
//! / `max_age` removes it as failed. Every attempt is reported to the [`OutcomeSink`] with
//! its number; at the shutdown deadline what is queued stays on disk. An unusable queue
//! directory leaves the action working from memory ([`ActionStats::queue_error`]). Other
//! kinds keep their own `work()` loops; throttle/dedupe run in a gate thread in front of
//! them.
//!
//! # `type = "syslog"`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `target` | required | `udp://host:port`, `tcp://host:port` (port 514 if left out) or `tls://host:port` (RFC 5425, port 6514); IPv4, `[IPv6]` or a host name, resolved when the action starts and again on every TCP reconnect |
//! | `tls` | system trust, verify | `tls://` only: `{ ca_file, cert_file, key_file, verify, server_name }` (`tls.rs`) |
//! | `format` | `rfc5424` | `rfc5424`, `rfc3164`, `cef` or `json` |
//! | `message` | see below | template of the message text; `rfc5424`/`rfc3164`: `{{ filter }}: {{ raw }}`; `json`: the `message` key, `{{ filter }} on {{ host }}`; `cef`: adds a `msg=` extension |
//! | `facility` | `user` | name (`kern` … `local7`) or 0-23 |
//! | `severity` | `warning` | name (`emerg` … `debug`) or 0-7 |
//! | `app_name` | `watchpost` | RFC 5424 APP-NAME (printable ASCII, 48 chars) / RFC 3164 TAG (letters, digits, `-_./`, 32 chars); other characters become `_` |
//! | `hostname` | `{{ host }}` | template; sanitised like `app_name` (255 chars); when empty, this computer's name |
//! | `msg_id` | none (`-`) | template of the RFC 5424 MSGID (32 chars) |
//! | `structured_data` | `true` | RFC 5424 `[watchpost@32473 filter="…" source="…"]`; `false` writes `-` |
//! | `time_zone` | `local` | zone of RFC 3164 timestamps: `local`, `UTC` or an IANA name (RFC 5424 uses UTC) |
//! | `framing` | `octet-counting` | TCP only (TLS always octet-counting): `octet-counting` (RFC 6587 `LEN SP MSG`) or `lf` (line breaks in a message become spaces) |
//! | `cef` | see below | table: `vendor` (`watchpost`), `product` (`watchpost`), `version` (crate version), `signature_id` (`{{ filter }}`), `name` (`{{ filter }}`), `severity` (`5`), `extensions` (table key → template; default `dvchost`, `cs1Label`/`cs1` = filter, `cs2Label`/`cs2` = source). All templates; values are escaped for CEF, pairs that render empty are left out |
//! | `cef_header` | `rfc3164` | `format = "cef"`: header before the CEF line: `rfc3164`, `rfc5424` or `none` |
//! | `json_header` | `rfc5424` | `format = "json"`: header before the JSON object: `rfc5424`, `rfc3164` or `none` |
//! | `max_message_bytes` | 8192 UDP / 65536 TCP | longer messages are cut at a character boundary (JSON then is no longer valid JSON) |
//! | `connect_timeout_secs` | 5 | TCP/TLS connect timeout |
//! | `write_timeout_secs` | 10 | TCP/TLS: time for writing one whole frame; TLS handshake timeout |
//! | `send_retries` | 3 | no effect (older configurations): TCP/TLS retry through the `retry` table |
//! | `max_backoff_secs` | 30 | UDP: longest wait between attempts to open the socket (starts at 0.1 s, doubles) |
//!
//! The JSON body is the event (`time`, `source`, `host`, `anomaly` when set, every field,
//! `raw`) plus `filter`, `actions` and `message`; an event field of one of those three
//! names is left out. The RFC 5424 timestamp is the event's `time`, else the time of
//! sending, in UTC with milliseconds. UDP is fire and forget (no queue, no retry); TCP and
//! TLS go through the durable retry queue (one attempt: detect a closed peer, connect and
//! handshake if needed, write one frame; every failure is transient).
//!
//! # `type = "run"`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `program` | required | absolute path, or a bare name looked up on `PATH` |
//! | `args` | `[]` | templates; each element becomes exactly one argument (never a shell) |
//! | `env` | `{}` | table name → template, added to the environment |
//! | `cwd` | inherited | working directory |
//! | `timeout_secs` | 60 | the program (its whole process group on Unix) is killed after this; counted as failed and `timed_out` |
//! | `max_concurrent` | 4 | programs of this action running at once |
//! | `max_output_bytes` | 4096 | stdout/stderr kept per run; logged at info (stdout) / warn (stderr) |
//! | `pass_event_env` | `true` | set `WATCHPOST_ACTION`, `WATCHPOST_FILTER`, `WATCHPOST_SOURCE`, `WATCHPOST_HOST`, `WATCHPOST_EVENT_JSON` |
//! | `max_event_json_bytes` | 32768 | `WATCHPOST_EVENT_JSON` is left out when the JSON is longer |
//! | `clear_env` | `false` | start from an empty environment instead of watchpost's |
//! | `retry_exit_codes` | `[]` | exit codes retried through the retry queue (others fail for good); with `retry` and no list, every non-zero exit is retried |
//!
//! A non-zero exit status counts as a failure. stdin is `/dev/null`. A `run` action that
//! retries runs one program at a time, in order (`max_concurrent` does not apply).
//!
//! # `type = "flag_file"`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `path` | required | template; a rendered path with a `..` component or a NUL byte, or a relative one from an absolute template, is refused |
//! | `mode` | `write` | `write` (atomically: temporary file, then rename; parent directories are created) or `remove` (a missing file is fine) |
//! | `content` | the event as JSON | template of the file content |
//! | `file_mode` | process umask | Unix permissions as an octal string, e.g. `"0640"` |
//!
//! # `type = "jsonl_file"`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `path` | required | the file (not a template: one file per action keeps the rotation exact and keeps event data from choosing where to write); its directory is created |
//! | `format` | the event as JSON | template of the line; line breaks in it become spaces |
//! | `rotate_bytes` | `100MiB` | number or size string, at least 1024: rotate before a line would pass it |
//! | `keep` | 5 | rotated files kept: `file.1` (newest) … `file.<keep>` |
//!
//! One `write_all` per line, a flush per batch of queued jobs; details in `jsonl_file.rs`.
//!
//! # `type = "registry"` (Windows)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `key` | required | template `HIVE\path`; hive `HKLM`/`HKEY_LOCAL_MACHINE` or `HKCU`/`HKEY_CURRENT_USER`, written out (not templated); the 64-bit view |
//! | `mode` | `set` | `set` (create the key if needed, set the value), `delete_value` or `delete_key` (with its subkeys); deleting what is missing is fine |
//! | `value` | `""` | template of the value name; `""` is the key's default value; not with `delete_key` |
//! | `kind` | `sz` | `set` only: `sz`, `expand_sz`, `dword` or `qword` |
//! | `data` | required for `set` | template; for `dword`/`qword` it must render as a decimal or `0x` hex number in range, else the job fails (a constant one is checked when the configuration is read) |
//!
//! The configuration is read everywhere; `check` (and so `check-config`) reports it as
//! Windows-only elsewhere. No shell and no `reg.exe`: the `winreg` crate calls the API.
//!
//! # `type = "dialog"`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `text` | required | template of the message |
//! | `title` | `watchpost: {{ filter }}` | template of the title / notification summary |
//! | `icon` (or `style`) | `info` | `info`, `warning` or `error` |
//! | `timeout` | none | seconds: Windows closes the box after them (none: stays until dismissed); Linux: the notification's expiry (none: the server's default; 0: never) |
//! | `urgency` | `critical` for `icon = "error"`, else `normal` | Linux: `low`, `normal` or `critical` |
//! | `bus` | see below | Linux: the session bus address (`unix:path=…`) |
//!
//! Windows: `WTSSendMessageW` to the active console session (from the service in session
//! 0) or to watchpost's own session, not waiting for the user. Linux:
//! `org.freedesktop.Notifications.Notify` on the session bus (`bus`, else
//! `DBUS_SESSION_BUS_ADDRESS`, else `/run/user/<uid>/bus`), 5 s deadline, spoken by the
//! small client in `dbus.rs`; the body's `&<>` are escaped (servers read markup). When the
//! message cannot be shown: a warning `dialog <name>: <why>; would have shown: <title>:
//! <text>`, and the job counts as failed.
//!
//! # `type = "open_url"`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `url` | required | template; insert event values with `\| url` (percent-encoded) |
//! | `allowed_schemes` | `["https", "http"]` | schemes the rendered URL may have; `file`, `javascript`, `vbscript`, `data` never |
//! | `browser` | Linux `xdg-open`; Windows the default browser | `[program, args…]`; the URL is appended as one more argument (never a shell) |
//!
//! A rendered URL with another scheme, or with characters a URL cannot contain (spaces,
//! quotes, control characters, non-ASCII, a `%` without two hex digits), is refused and the
//! job fails. Windows: from the service (session 0) the browser is started as the console
//! user in their session (`WTSQueryUserToken` + `CreateProcessAsUserW`, `rundll32.exe
//! url.dll,FileProtocolHandler URL` unless `browser` is set); otherwise `ShellExecuteW`.
//!
//! # `type = "webhook"`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `url` | required | template, `https://` or `http://`; scheme, host and port written out before the first `{{`, every inserted value ending in `\| url` |
//! | `method` | `POST` | `POST` or `PUT` |
//! | `body` | the event as JSON | template (the default is the syslog `json` / `jsonl_file` object) |
//! | `content_type` | `application/json` | the `Content-Type` header |
//! | `headers` | none | table name → template; a value rendering with CR/LF or another control character fails the job |
//! | `bearer_token_env` / `bearer_token_file` | none | `Authorization: Bearer …`, read at each delivery |
//! | `username` + `password_env` / `password_file` | none | basic authentication instead |
//! | `timeout` | `10s` | seconds or a duration: connect, TLS and the whole exchange |
//! | `tls` | system trust | `{ ca_file, cert_file, key_file, verify, server_name }` (`tls.rs`) |
//!
//! 2xx is success; 408, 429, 5xx, connection failures and timeouts are transient; other
//! statuses permanent, with the status and the first 200 bytes of the body. Our own small
//! HTTP/1.1 client (`webhook/`, over `net.rs`); why not `ureq` is said there.
//!
//! # `type = "email"`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `server` | required | `host:port`; port 587 (`starttls`), 465 (`tls`) or 25 (`none`) if left out |
//! | `tls` | `starttls` | `starttls` (required when asked for), `tls` (implicit) or `none` (a `check-config` warning unless the server is loopback) |
//! | `tls_options` | system trust | as the webhook's `tls` |
//! | `username` + `password_env` / `password_file` | none | AUTH PLAIN or LOGIN; over TLS only unless `allow_plaintext_auth = true` |
//! | `from` | required | sender address |
//! | `to` | required | recipient addresses (1-100) |
//! | `subject` | `watchpost: {{ filter }} on {{ host }}` | template; RFC 2047 encoded when not ASCII |
//! | `body` | a summary | template; the default lists filter, host, source, time, actions, every field and `raw` |
//! | `helo` | this computer's name | the EHLO name |
//! | `timeout` | `30s` | the whole SMTP session |
//!
//! A UTF-8 `text/plain` quoted-printable message with `Date` and `Message-ID`, one SMTP
//! session per message (`email/`). 4xx replies and connection problems are transient, 5xx
//! permanent (a wrong password: 535).

//!
//! # `type = "quarantine"`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `mode` | `apply` | `apply` or `release` (a release action has no other keys: it undoes what the state file records) |
//! | `allow` | `[]` | peers still reachable: `10.0.0.5`, `10.0.0.0/24`, `fd00::5`, `2001:db8::/48`, or one port of them, TCP and UDP: `10.0.0.5:514`, `[fd00::5]:443`, `[2001:db8::/48]:443`; addresses only, no host names |
//! | `allow_dns` | `false` | DNS (TCP/UDP 53) to the resolvers |
//! | `dns_servers` | `/etc/resolv.conf`'s (else systemd-resolved's upstream list) | resolver addresses (needs `allow_dns`); loopback ones are always reachable |
//! | `allow_dhcp` | `false` | DHCPv4 (68 → 67) and DHCPv6 (546 → 547) |
//! | `timeout` | none | duration (`4h`, `30m`): the daemon lifts it then, also across restarts; none: until released |
//! | `firewall` | `true` | Linux: the nftables table; `false` for registry- or hook-only quarantines |
//! | `nft` | `nft` | the `nft` program (path or name on PATH) |
//! | `table` | `watchpost_quarantine` | our table, family `inet` |
//! | `registry` | none | Windows: `{ key = 'HKLM\…', value = "Active", kind = "dword", data = "1" }` (defaults shown; `kind` `sz`, `expand_sz`, `dword`, `qword`; not templated): set on apply; on release the earlier data is restored, a value that did not exist deleted, a key that did not exist deleted |
//! | `hook` | none | `[program, args…]`, args templates; run on apply and on release (the argv rendered at apply) with `WATCHPOST_QUARANTINE=apply\|release` |
//! | `hook_timeout_secs` | 60 | the hook (its process group) is killed after this |
//! | `queue_capacity` | 100 | |
//!
//! Linux ruleset: input/output/forward base chains at priority -10 with `policy drop`,
//! accepting loopback, ICMPv6 neighbour discovery, the allow-list (a whole peer both ways;
//! a peer's port outward plus its established replies), DNS and DHCP; forwarding is
//! dropped. Applied with `nft -f -` (one transaction, the table replaced whole), released by
//! deleting only our table. State, with what to undo, in `<state_dir>/quarantine.json`;
//! `watchpost quarantine status|apply|release` work beside the daemon (see
//! `quarantine.rs`).

mod common;
mod config;
mod control;
#[cfg(unix)]
mod dbus;
mod delivery;
mod dialog;
mod dispatcher;
mod durable;
mod email;
mod flag_file;
pub mod http;
mod job;
mod jsonl_file;
mod kind;
mod kit;
mod limits;
mod net;
mod open_url;
pub mod quarantine;
mod queue;
mod registry;
mod run;
mod scan;
mod secret;
mod syslog;
mod table;
#[cfg(all(test, unix))]
mod testpeer;
mod tls;
mod webhook;

pub use config::{ActionSpec, KINDS, check_allow_lists, parse_action};
pub use control::{ActionStats, Attempt, OutcomeSink};
pub use dispatcher::{ActionError, DispatchOptions, Dispatcher, Lane, Via};
pub use job::{Job, Ticket};
pub use run::foreign_platform_path;
