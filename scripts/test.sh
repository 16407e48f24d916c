#!/usr/bin/env bash
# Runs every watchpost test on this machine, installing what the tests need first.
# Used as-is by CI (.ci/run). Needs root for apt-get on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests talk to: rsyslog (syslog receiver for the action and end-to-end
# tests), util-linux's logger (a syslog sender for the listener tests), journalctl and
# systemd-journal-remote (journal files for the journald tests).
missing=()
[ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
[ -x /usr/bin/logger ] || missing+=(bsdutils)
command -v journalctl >/dev/null || missing+=(systemd)
[ -x /lib/systemd/systemd-journal-remote ] || [ -x /usr/lib/systemd/systemd-journal-remote ] || missing+=(systemd-journal-remote)
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
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary, the last ones
# being doc-test runs with nothing in them).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END {
  printf "tests: %d passed, %d failed, %d skipped\n", p, f, i; exit (p == 0 || f > 0) }' "$log"
