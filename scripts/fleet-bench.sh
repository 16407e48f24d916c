#!/usr/bin/env bash
# The fleet load benchmark: a private PostgreSQL cluster, watchpost-server over TLS on
# 127.0.0.1, and watchpost-loadgen playing AGENTS agents at RATE events/s for DURATION
# seconds. With CHAOS=1 the server is killed with SIGKILL (and started again) at a third
# of the load and PostgreSQL restarted (pg_ctl restart -m immediate: a crash) at two
# thirds; the run fails unless every acknowledged event is in the database exactly once,
# and unless the console's per-hour counts (per agent and folded) agree with the events.
#
#   scripts/fleet-bench.sh                                   # 10,000 agents, 20,000 events/s, 300 s, chaos
#   AGENTS=500 RATE=2000 DURATION=40 scripts/fleet-bench.sh  # smaller
#   BUILD=0 … uses the binaries already built; OUT=report.json writes the figures
#   SERVERS=2: two server instances on one database (agent i talks to instance i mod 2),
#   PROCESSES=2: the simulated agents played by two loadgen processes. Each connection is a
#   file descriptor and a process may hold only `ulimit -Hn` of them; 10,000 agents hold
#   30,000 connections. With CHAOS=1 the first instance is the one killed.
#   PROBE_EVERY=50 (the default): after every 50th acknowledged batch, each agent sends it
#   again, replays the one before and sends one after a gap: the run fails unless the
#   first is acknowledged as committed and the others refused (409)
#   POLL=1 CHAOS=0 scripts/fleet-bench.sh                    # also the channel back: every agent
#       long-polls; a group configuration is published at a third and at two thirds of the
#       load, and a command sent to one agent after each; the report says when 50/99/100 %
#       of the agents had each version and how long the command took to be answered
#
# Needs PostgreSQL (Debian's postgresql package) and openssl. Runs PostgreSQL as nobody
# when started as root. Everything lives in a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS=${AGENTS:-10000}
RATE=${RATE:-20000}
DURATION=${DURATION:-300}
CHAOS=${CHAOS:-1}
POLL=${POLL:-0}
HEARTBEAT=${HEARTBEAT:-30}
BATCH_INTERVAL=${BATCH_INTERVAL:-10}
RAMP=${RAMP:-60}
PROBE_EVERY=${PROBE_EVERY:-50}
PROFILE=${PROFILE:-release}
OUT=${OUT:-}
SERVERS=${SERVERS:-1}
PROCESSES=${PROCESSES:-1}

BUILD=${BUILD:-1}
if [ "$PROFILE" = release ]; then
  [ "$BUILD" = 0 ] || cargo build --release --locked -p watchpost-server -p watchpost-loadgen
  bin=target/release
else
  [ "$BUILD" = 0 ] || cargo build --locked -p watchpost-server -p watchpost-loadgen
  bin=target/debug
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)"; exit 1; }

# Every simulated agent holds a connection: raise the open-file limit where allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
work=$(mktemp -d /tmp/wp-bench-XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  for f in "$work"/server-*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  as_pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ]; then
  chown 65534:65534 "$work"
  as_pg() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }
else
  as_pg() { "$@"; }
fi

echo "== PostgreSQL $($pgbin/postgres --version | awk '{print $3}') in $work"
as_pg "$pgbin/initdb" -D "$work/pg" -A trust -U postgres -E UTF8 --no-instructions >/dev/null
cat >>"$work/pg/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$work'
max_connections = 200
shared_buffers = 1GB
wal_buffers = 64MB
max_wal_size = 8GB
checkpoint_timeout = 15min
EOF
as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w start >/dev/null
as_pg "$pgbin/createdb" -h "$work" -U postgres watchpost
db="host=$work port=5432 user=postgres dbname=watchpost"

echo "== TLS: a test CA and a certificate for 127.0.0.1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
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
heartbeat = "${HEARTBEAT}s"
[database]
url = "$db"
pool_size = 12
[limits]
agent_requests_per_second = 50
enroll_per_minute = 1000000
max_connections = 40000
EOF
server="$bin/watchpost-server -c $work/server.toml"
$server check-config
$server init-db
$server group add bench >/dev/null
secret=$($server secret create bench s1 2>/dev/null)

start_server() {
  WATCHPOST_LOG=warn $server run 2>>"$work/server.log" &
  server_pid=$!
  echo $server_pid >"$work/server.pid"
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$work/server.log"; exit 1
}
start_server
# Further instances: the same configuration on the next ports.
servers="https://127.0.0.1:$port"
watch_servers="--watch watchpost-server=@$work/server.pid"
for n in $(seq 2 "$SERVERS"); do
  p=$((port + n - 1))
  sed "s/^listen = .*/listen = \"127.0.0.1:$p\"/" "$work/server.toml" >"$work/server-$n.toml"
  WATCHPOST_LOG=warn $bin/watchpost-server -c "$work/server-$n.toml" run 2>>"$work/server-$n.log" &
  echo $! >"$work/server-$n.pid"
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break
    sleep 0.1
  done
  servers="$servers,https://127.0.0.1:$p"
  watch_servers="$watch_servers --watch watchpost-server-$n=@$work/server-$n.pid"
done

if [ "$CHAOS" = 1 ]; then
  (
    sleep $((RAMP + DURATION / 3))
    echo "== chaos: kill -9 the server"
    kill -9 "$server_pid"
    sleep 3
    WATCHPOST_LOG=warn $server run 2>>"$work/server.log" &
    echo $! >"$work/server.pid"
    sleep $((DURATION / 3 - 3))
    echo "== chaos: PostgreSQL restart (immediate: a crash)"
    as_pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate -w restart -l "$work/pg.log" >/dev/null
  ) &
  chaos_pid=$!
fi

if [ "$POLL" = 1 ]; then
  cat >"$work/group.toml" <<'GROUP'
[[source]]
name = "sep-av"
type = "sep_av_log"
path = "C:\\ProgramData\\Symantec\\Symantec Endpoint Protection\\CurrentVersion\\Data\\Logs\\AV\\*.Log"

[[filter]]
name = "virus-found"
match = { source = "sep-av", event_code = 5 }
actions = ["siem"]

[[action]]
name = "siem"
type = "syslog"
target = "udp://192.0.2.10:514"
GROUP
  (
    for step in 1 2; do
      sleep $(( step == 1 ? RAMP + DURATION / 3 : DURATION / 3 ))
      sed -i "s/192.0.2.1[0-9]/192.0.2.1$step/" "$work/group.toml"
      # As an administrator would: again after a failure (PostgreSQL may be recovering
      # from the chaos step's crash), every 2 s for up to a minute.
      for _ in $(seq 1 30); do
        out=$($server config publish bench "$work/group.toml" -m "step $step" 2>&1) && break
        sleep 2
      done
      echo "== publish: $(echo "$out" | tail -1)"
      sleep 5
      for _ in $(seq 1 30); do
        out=$($server command send --agent loadgen-00042 reload 2>&1) && break
        sleep 2
      done
      echo "== command: $(echo "$out" | tail -1)"
    done
  ) &
  publish_pid=$!
fi

echo "== load: $AGENTS agents, $RATE events/s, ${DURATION}s (ramp ${RAMP}s), chaos=$CHAOS, $SERVERS server instance(s), $PROCESSES loadgen process(es)"
set +e
WATCHPOST_LOADGEN_SECRET=$secret "$bin/watchpost-loadgen" --server "$servers" --processes "$PROCESSES" \
  --ca-file "$work/ca.pem" --agents "$AGENTS" --rate "$RATE" --duration "$DURATION" \
  --heartbeat "$HEARTBEAT" --batch-interval "$BATCH_INTERVAL" --ramp "$RAMP" --probe-every "$PROBE_EVERY" --db "$db" \
  $watch_servers --watch "postgresql=@$work/pg/postmaster.pid" ${OUT:+--json "$OUT"} \
  $([ "$POLL" = 1 ] && echo --poll)
status=$?
set -e
[ -n "${chaos_pid:-}" ] && wait "$chaos_pid" 2>/dev/null || true
[ -n "${publish_pid:-}" ] && wait "$publish_pid" 2>/dev/null || true
server_pid=$(cat "$work/server.pid")
echo "== database: $(as_pg "$pgbin/psql" -h "$work" -U postgres -d watchpost -XAt -c "SELECT count(*) || ' events, ' || pg_size_pretty(pg_database_size('watchpost')) FROM events")"
# The overview's per-hour counts, kept by ingest across the kill and the restart (and
# folded by the server's maintenance as hours pass), must be what counting the events
# gives, per hour and rule level, host and filter (the server's tests run the same check).
differ=$(as_pg "$pgbin/psql" -h "$work" -U postgres -d watchpost -XAt -c "$(cat crates/server/sql/hours_check.sql)")
if [ "$differ" = 0 ]; then
  echo "== hourly counts: $(as_pg "$pgbin/psql" -h "$work" -U postgres -d watchpost -XAt -c "SELECT (SELECT count(*) FROM event_hours) || ' per-agent rows, ' || (SELECT count(*) FROM folded_level_hours) || ' folded, ' || (SELECT coalesce(sum(events), 0) FROM event_hours) + (SELECT coalesce(sum(events), 0) FROM folded_level_hours) || ' events'") — agree with the events"
else
  echo "== hourly counts: $differ rows differ from counting the events"
  status=1
fi
exit $status
