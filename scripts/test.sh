#!/usr/bin/env bash
# Runs every watchpost test on this machine, installing what the tests need first.
# Used as-is by CI (.ci/run). Needs root for apt-get on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests talk to: rsyslog (syslog receiver for the action and end-to-end tests).
missing=()
[ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
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
cargo test --workspace --locked
