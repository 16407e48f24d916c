#!/usr/bin/env bash
# Runs every watchpost test on this machine, installing what the tests need first.
# Used as-is by CI (.ci/run). Needs root for apt-get on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests talk to: rsyslog (syslog receiver for the action and end-to-end
# tests), util-linux's logger (a syslog sender for the listener tests), journalctl and
# systemd-journal-remote (journal files for the journald tests), dbus-daemon (a private
# session bus for the dialog action's notification tests), Python's http.server and
# aiosmtpd with openssl's test CA (HTTP(S) and SMTP receivers for the webhook and email
# actions), rsyslog-gnutls (syslog over TLS in e2e_delivery), nft and ip (the quarantine
# test isolates a network namespace with nftables), PostgreSQL (the fleet server's tests
# start private clusters with its initdb and pg_ctl), Chromium with its WebDriver and
# Selenium for Python (the web console's tests drive a headless browser).
missing=()
[ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || missing+=(rsyslog-gnutls)
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/bin/logger ] || missing+=(bsdutils)
command -v journalctl >/dev/null || missing+=(systemd)
[ -x /lib/systemd/systemd-journal-remote ] || [ -x /usr/lib/systemd/systemd-journal-remote ] || missing+=(systemd-journal-remote)
command -v dbus-daemon >/dev/null || missing+=(dbus-daemon)
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
[ -x /usr/sbin/nft ] || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
/usr/bin/python3 -c 'import selenium' 2>/dev/null || missing+=(python3-selenium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing test dependencies: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (Linux)"
log=$(mktemp)
winlog=$(mktemp)
trap 'rm -f "$log" "$winlog"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"

# The fleet under load and failures, bounded (the full-scale run is a benchmark:
# BENCHMARKS.md): 500 simulated agents over TLS, the server killed with SIGKILL and
# PostgreSQL crash-restarted mid-load; fails unless every acknowledged event is stored
# exactly once. The agents also long-poll the channel back (POLL=1): two configuration
# versions are published and a command sent during the load. Two server instances share
# the database and the agents are played by two simulator processes (SERVERS=2
# PROCESSES=2), the way the benchmark reaches 10,000 agents where a process may hold
# only 20,000 connections: a configuration published through one instance reaches the
# agents polling on the other, and the killed instance's agents come back to it.
echo "== fleet load with a server kill and a PostgreSQL restart (scripts/fleet-bench.sh)"
AGENTS=500 RATE=2000 DURATION=45 RAMP=5 HEARTBEAT=10 BATCH_INTERVAL=2 PROFILE=debug POLL=1 SERVERS=2 PROCESSES=2 \
  scripts/fleet-bench.sh 2>&1 | tee -a "$log" | grep -v '^\['
grep -q 'database check: .* — ok' "$log"

# The Windows build: cross-compiled for x86_64-pc-windows-gnu, its tests run under Wine
# (installs Debian's rustc-web, MinGW-w64 and Wine when missing; see the script's header).
echo "== Windows tests under Wine (scripts/windows-test.sh)"
win_status=0
timeout 2400 scripts/windows-test.sh 2>&1 | tee "$winlog" || win_status=$?

# One closing line for the whole run: cargo prints "test result: … N passed; M failed; K
# ignored; …" per test binary (the last ones being doc-test runs with nothing in them), the
# Windows script a line of its own; every binary's ignored tests are counted, on both
# platforms (benchmarks kept out of the run, and tests that need what one platform lacks).
awk -v win_status="$win_status" '
  FNR == NR && /^test result:/ { p += $4; f += $6; i += $8 }
  /^windows tests: / { wp = $3; wf = $5; wi = $7 }
  END {
    if (win_status != 0 && wf == 0) wf = 1
    printf "tests: %d passed, %d failed, %d ignored (Linux: %d passed, %d failed, %d ignored; Windows under Wine: %d passed, %d failed, %d ignored)\n", p + wp, f + wf, i + wi, p, f, i, wp, wf, wi
    exit (p == 0 || wp == 0 || f + wf > 0)
  }' "$log" "$winlog"
