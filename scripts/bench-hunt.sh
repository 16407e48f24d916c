#!/usr/bin/env bash
# `watchpost hunt` beside Hayabusa, Chainsaw and the parse-only floor, in one run.
#
#   scripts/bench-hunt.sh EVTX_DIR [ROUNDS]
#
# EVTX_DIR is any folder of .evtx files (searched recursively). The figures in
# BENCHMARKS.md used Yamato-Security/hayabusa-sample-evtx (593 files, 24,661 records) and
# the repository's tests/data/evtx. Every case runs ROUNDS times (default 3), the cases
# alternating within each round; the table gives the median wall time, CPU time
# (user + system) and peak RSS of each, and the load average before and after.
#
# Environment:
#   WATCHPOST        the binary to measure (default target/release/watchpost; build it
#                    with `cargo build --release -p watchpost`)
#   WATCHPOST_BEFORE another watchpost binary measured beside it (e.g. a build of main);
#                    it keeps its rule caches apart (a cache holds for one build only, so
#                    two builds sharing one would each find the other's and start cold)
#   PEERS            the peer binaries and Hayabusa's rules (default ../shared/peers;
#                    cases whose binary is absent are skipped, and say so)
#   SIGMA_RULES      SigmaHQ rules (default tests/data/sigma/rules)
#   HAYABUSA_RULES   Hayabusa's rules (default $PEERS/hayabusa-rules)
#   SMALL_EVTX       the one small file for the fixed cost (default: the smallest
#                    .evtx of tests/data/evtx)
set -euo pipefail
cd "$(dirname "$0")/.."
evtx=${1:?usage: scripts/bench-hunt.sh EVTX_DIR [ROUNDS]}
rounds=${2:-3}
wp=${WATCHPOST:-target/release/watchpost}
before=${WATCHPOST_BEFORE:-}
peers=${PEERS:-../shared/peers}
sigma=${SIGMA_RULES:-tests/data/sigma/rules}
hay=${HAYABUSA_RULES:-$peers/hayabusa-rules}
small=${SMALL_EVTX:-$(find tests/data/evtx -name '*.evtx' -printf '%s %p\n' | sort -n | sed -n 1p | cut -d' ' -f2-)}
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time; Debian package time)"; exit 1; }
[ -x "$wp" ] || { echo "no $wp: cargo build --release -p watchpost"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export XDG_CACHE_HOME=$work/cache
results=$work/results.tsv

# name|command (run with bash -c; output to files in $work)
cases=()
add() { cases+=("$1|$2"); }
if [ -x "$peers/bin/evtx-floor" ]; then
  add "floor: evtx crate to JSON, 1 thread" "$peers/bin/evtx-floor --threads 1 '$evtx'"
  add "floor: evtx crate to JSON, 2 threads" "$peers/bin/evtx-floor --threads 2 '$evtx'"
else
  echo "skipped: the parse floor (no $peers/bin/evtx-floor)"
fi
hay_excl=""
for l in exclude_rules.txt noisy_rules.txt; do
  [ -f "$hay/config/$l" ] && hay_excl="$hay_excl --exclude-list '$hay/config/$l'"
done
add "watchpost, SigmaHQ rules" "'$wp' hunt -r '$sigma' --format jsonl '$evtx' > '$work/wp-sigma.jsonl'"
add "watchpost, SigmaHQ rules, no rule cache" "'$wp' hunt --no-rule-cache -r '$sigma' --format jsonl '$evtx' > /dev/null"
bw="XDG_CACHE_HOME='$work/cache-before' '$before'"
[ -n "$before" ] && add "watchpost before, SigmaHQ rules" "$bw hunt -r '$sigma' --format jsonl '$evtx' > /dev/null"
if [ -x "$peers/bin/chainsaw" ]; then
  add "Chainsaw 2.16.4, SigmaHQ rules" "'$peers/bin/chainsaw' hunt '$evtx' -s '$sigma' --mapping '$peers/chainsaw/mappings/sigma-event-logs-all.yml' --jsonl -o '$work/cs.jsonl' --skip-errors 2>/dev/null"
else
  echo "skipped: Chainsaw (no $peers/bin/chainsaw)"
fi
if [ -d "$hay" ]; then
  add "watchpost, Hayabusa rules" "'$wp' hunt -r '$hay' $hay_excl --format jsonl '$evtx' > '$work/wp-hay.jsonl'"
  [ -n "$before" ] && add "watchpost before, Hayabusa rules" "$bw hunt -r '$hay' $hay_excl --format jsonl '$evtx' > /dev/null"
  if [ -x "$peers/bin/hayabusa" ]; then
    add "Hayabusa 4.0.0, Hayabusa rules" "'$peers/bin/hayabusa' dfir-timeline -d '$evtx' -w -r '$hay' -c '$hay/config' -o '$work/hay.csv' -C -K -Q -q > /dev/null 2>&1; rm -f '$work/hay.csv'"
  else
    echo "skipped: Hayabusa (no $peers/bin/hayabusa)"
  fi
  add "fixed cost: watchpost, Hayabusa rules, one small file" "'$wp' hunt -r '$hay' $hay_excl '$small' > /dev/null"
  [ -n "$before" ] && add "fixed cost: watchpost before, Hayabusa rules, one small file" "$bw hunt -r '$hay' $hay_excl '$small' > /dev/null"
  [ -x "$peers/bin/hayabusa" ] && add "fixed cost: Hayabusa, one small file" "'$peers/bin/hayabusa' dfir-timeline -f '$small' -w -r '$hay' -c '$hay/config' -o '$work/hay1.csv' -C -K -Q -q > /dev/null 2>&1; rm -f '$work/hay1.csv'"
else
  echo "skipped: Hayabusa's rules (no $hay)"
fi
add "fixed cost: watchpost, SigmaHQ rules, one small file" "'$wp' hunt -r '$sigma' '$small' > /dev/null"
add "fixed cost: watchpost, SigmaHQ rules, one small file, no rule cache" "'$wp' hunt --no-rule-cache -r '$sigma' '$small' > /dev/null"
[ -n "$before" ] && add "fixed cost: watchpost before, SigmaHQ rules, one small file" "$bw hunt -r '$sigma' '$small' > /dev/null"
[ -x "$peers/bin/chainsaw" ] && add "fixed cost: Chainsaw, SigmaHQ rules, one small file" "'$peers/bin/chainsaw' hunt '$small' -s '$sigma' --mapping '$peers/chainsaw/mappings/sigma-event-logs-all.yml' --jsonl -o '$work/cs1.jsonl' --skip-errors 2>/dev/null"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# Warm the page cache and the rule caches once.
for c in "${cases[@]}"; do bash -c "${c#*|}" > /dev/null 2>&1 || true; done
: > "$results"
for r in $(seq "$rounds"); do
  for c in "${cases[@]}"; do
    name=${c%%|*}
    /usr/bin/time -o "$work/t" -f "%e %U %S %M" bash -c "${c#*|}" 2>/dev/null || echo "failed: $name" >&2
    printf '%s\t%s\t%s\n' "$name" "$(cat "$work/t" | tail -1)" "$(cut -d' ' -f1 /proc/loadavg)" >> "$results"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "EVTX: $evtx ($(find "$evtx" -iname '*.evtx' | wc -l) files); rounds: $rounds; $(nproc) cores"
echo "load average before: $load_before; after: $load_after"
[ -s "$work/wp-sigma.jsonl" ] && echo "watchpost detections, SigmaHQ rules: $(wc -l < "$work/wp-sigma.jsonl")"
[ -s "$work/wp-hay.jsonl" ] && echo "watchpost detections, Hayabusa rules: $(wc -l < "$work/wp-hay.jsonl")"
[ -s "$work/cs.jsonl" ] && echo "Chainsaw detections: $(wc -l < "$work/cs.jsonl")"
python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, t, load = line.rstrip("\n").split("\t")
    wall, user, sys_, rss = t.split()
    rows.setdefault(name, []).append((float(wall), float(user) + float(sys_), int(rss), float(load)))
print()
print("| case | wall (median) | CPU user+sys (median) | peak RSS (median) | load at each run |")
print("|---|---|---|---|---|")
for name, v in rows.items():
    med = lambda i: statistics.median(x[i] for x in v)
    print(f"| {name} | {med(0):.2f} s | {med(1):.2f} s | {med(2) / 1024:.0f} MB | {' '.join(f'{x[3]:.1f}' for x in v)} |")
EOF
