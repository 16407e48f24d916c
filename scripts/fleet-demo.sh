#!/usr/bin/env bash
# The fleet in one command: installs PostgreSQL when it is missing (Debian, as root),
# starts a private PostgreSQL cluster, watchpost-server over TLS on 127.0.0.1 and two
# watchpost agents (A and B, one group), writes Symantec Endpoint Protection detections
# into the agents' logs and shows them arriving on the server; then publishes a change of
# the group's configuration and shows both agents applying it (by hot reload), and
# acknowledges a detection on the server, which the agent's own store then shows.
# Everything lives in a temporary directory, removed at the end.
#
#   scripts/fleet-demo.sh                 # release build (PROFILE=debug for a debug one)
#   KEEP=1 scripts/fleet-demo.sh          # leave the directory (and print where it is)
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing PostgreSQL and openssl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql openssl >/dev/null
  else
    echo "PostgreSQL (initdb) and openssl are needed: apt-get install postgresql openssl"; exit 1
  fi
fi
echo "== building watchpost and watchpost-server ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p watchpost -p watchpost-server
else
  cargo build --locked -p watchpost -p watchpost-server
fi
bin=${CARGO_TARGET_DIR:-target}/$PROFILE
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

work=$(mktemp -d /tmp/wp-fleet-demo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "== kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ]; then
  chown 65534:65534 "$work"
  as_pg() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }
else
  as_pg() { "$@"; }
fi

echo "== PostgreSQL: a private cluster in $work/pg"
as_pg "$pgbin/initdb" -D "$work/pg" -A trust -U postgres -E UTF8 --no-instructions >/dev/null
printf "listen_addresses = ''\nunix_socket_directories = '%s'\n" "$work" >>"$work/pg/postgresql.conf"
as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w start >/dev/null
as_pg "$pgbin/createdb" -h "$work" -U postgres watchpost
chmod 755 "$work"

echo "== TLS: a demo CA and a certificate for 127.0.0.1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=demo-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null

port=$((20000 + RANDOM % 20000))
cat >"$work/server.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
tls_cert = "$work/server.pem"
tls_key = "$work/server.key"
heartbeat = "5s"
[database]
url = "host=$work port=5432 user=postgres dbname=watchpost"
EOF
S="$bin/watchpost-server -c $work/server.toml"
$S init-db 2>/dev/null
$S group add demo --description "the demo's two agents" >/dev/null
secret=$($S secret create demo demo 2>/dev/null)
WATCHPOST_LOG=warn $S run 2>>"$work/server.log" &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
echo "== watchpost-server listening on https://127.0.0.1:$port"

# Each agent's own file: its state, its SEP log folder, how it reaches the server. The
# group's configuration (published below) adds to it and replaces what it names alike.
for a in A B; do
  mkdir -p "$work/$a-logs"
  cat >"$work/$a.toml" <<EOF
[agent]
state_dir = "$work/$a-state"
host = "$a"

[[source]]
name = "sep-av"
type = "sep_av_log"
path = "$work/$a-logs/*.Log"
start_at = "beginning"

[[filter]]
name = "virus-found"
match = { source = "sep-av", event_code = 5 }
actions = ["log"]
require_ack = true

[[action]]
name = "log"
type = "jsonl_file"
path = "$work/$a-state/detections.jsonl"

[fleet]
server = "https://127.0.0.1:$port"
ca_file = "$work/ca.pem"
enroll_secret = "$secret"
host_id = "demo-host-$a"
EOF
  WATCHPOST_LOG=info "$bin/watchpost" run -c "$work/$a.toml" 2>>"$work/$a.log" &
  pids+=($!)
done

# A virus-found line (event 5) of SEP's daily AV log, from the repository's sample, with
# this agent's computer name and a risk name of our own.
detect() { # AGENT RISK
  line=$(grep -m1 -a '^[^,]*,5,' tests/data/sep/client-av/05292019.Log | tr -d '\r')
  printf '%s\r\n' "$(printf '%s' "$line" | awk -F, -v OFS=, -v c="$1" -v r="$2" '{ $4 = "2"; $5 = c; $7 = r; print }')" \
    >>"$work/$1-logs/05292019.Log"
}
wait_until() { # SECONDS COMMAND...
  local n=$(($1 * 10)); shift
  for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.1; done
  return 1
}
events_on_server() { [ "$($S events "host:$1" --format jsonl --limit 1000 2>/dev/null | wc -l)" -ge "$2" ]; }

echo
echo "== SEP on A and B writes detections"
detect A "EICAR Test String"; detect A "Trojan.Gen.2"; detect B "W32.Downadup.B"
wait_until 60 events_on_server A 2 && wait_until 60 events_on_server B 1 \
  || { echo "the detections did not arrive"; tail "$work"/*.log; exit 1; }
echo "== on the server (watchpost-server events 'needsack:true'):"
$S events 'needsack:true' | grep -v '^   '
echo
$S agent list

echo
echo "== publish a configuration change to the group: also flag every detection to a"
echo "   second file (checked on the server with the agents' own check-config first)"
cat >"$work/group.toml" <<EOF
[[source]]
name = "sep-av"
type = "sep_av_log"
path = "C:\\\\ProgramData\\\\Symantec\\\\Symantec Endpoint Protection\\\\CurrentVersion\\\\Data\\\\Logs\\\\AV\\\\*.Log"

[[filter]]
name = "group-alert"
match = { source = "sep-av", event_code = 5 }
actions = ["alert"]

[[action]]
name = "alerts"
type = "jsonl_file"
path = "$work/alerts.jsonl"
EOF
# The filter names an action that does not exist ("alert"): the server says where, and
# nothing is published.
echo "-- first try, with a mistake:"
$S config publish demo "$work/group.toml" -m "alerts" || true
sed -i 's|actions = \["alert"\]|actions = ["alerts"]|' "$work/group.toml"
echo "-- corrected:"
$S config publish demo "$work/group.toml" -m "alerts"
applied() { $S config status demo | grep -c "runs version 1" | grep -qx 2; }
wait_until 30 applied || { echo "the agents did not apply it"; tail "$work"/*.log; exit 1; }
$S config status demo
detect A "Backdoor.Demo"; detect B "Backdoor.Demo"
wait_until 30 sh -c "[ \$(wc -l <'$work/alerts.jsonl' 2>/dev/null || echo 0) -ge 2 ]" \
  || { echo "the new filter did not fire"; exit 1; }
echo "== both agents run the group's new filter (alerts.jsonl):"
cut -c1-160 "$work/alerts.jsonl"

echo
first=$($S events 'needsack:true host:A' --format jsonl --limit 1 | sed -n 's/^{"id":\([0-9]*\).*/\1/p')
pending_on_a() { "$bin/watchpost" events --pending-ack --format jsonl -c "$work/A.toml" 2>/dev/null | wc -l; }
before=$(pending_on_a)
echo "== acknowledge event $first on the server; A's own store follows"
$S ack "$first" -m "known test file"
fewer() { [ "$(pending_on_a)" -lt "$before" ]; }
wait_until 30 fewer || { echo "the acknowledgement did not reach A"; exit 1; }
echo "-- A had $before events waiting for an acknowledgement; now $(pending_on_a)."
echo "-- watchpost events --pending-ack on A:"
"$bin/watchpost" events --pending-ack -c "$work/A.toml" | grep -v '^   ' || true
echo
echo "== done"
