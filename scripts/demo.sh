#!/usr/bin/env bash
# Runs the watchpost daemon on its built-in configuration and shows it react: it writes a
# Symantec Endpoint Protection Auto-Protect detection and an IPS "System Infected:" alert
# into the log directory the daemon follows, and prints the syslog messages it sends.
# Everything lives in a temporary directory; nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures="$(pwd)/../shared/fixtures"
[ -d "$fixtures" ] || { echo "needs ../shared/fixtures beside the repository" >&2; exit 1; }

cargo build --release --locked -q -p watchpost
demo=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$demo"' EXIT
mkdir -p "$demo/sep"
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# A stand-in SIEM: prints every syslog datagram it receives.
python3 -u -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    print("SIEM received:", s.recv(65536).decode("utf-8", "replace"), flush=True)
' "$port" &

export WATCHPOST_STATE_DIR="$demo/state" WATCHPOST_SEP_LOGS="$demo/sep" WATCHPOST_SIEM="udp://127.0.0.1:$port"
echo "== watchpost run (built-in configuration; SEP logs in $WATCHPOST_SEP_LOGS)"
target/release/watchpost run &
wp=$!
sleep 1

echo "== SEP writes an Auto-Protect detection to today's AV log"
python3 - "$fixtures" "$demo/sep" <<'PY'
import sys, datetime, os
fx, out = sys.argv[1], sys.argv[2]
line = next(l for l in open(f"{fx}/sep/client-av/05292019.Log", newline="") if l.split(",")[1] == "5")
c = line.rstrip("\r\n").split(",")
now = datetime.datetime.now()
c[0] = "%02X%02X%02X%02X%02X%02X" % (now.year - 1970, now.month - 1, now.day, now.hour, now.minute, now.second)
c[3], c[4], c[6], c[7] = "2", os.uname().nodename, "EICAR Test String", r"C:\Users\demo\Downloads\eicar.com"
with open(f"{out}/{now:%m%d%Y}.Log", "ab") as f:
    f.write((",".join(c) + "\r\n").encode())
PY
sleep 1
echo "== SEP's IPS logs a 'System Infected:' alert to seclog.log"
python3 - "$fixtures" "$demo/sep" <<'PY'
import sys, time
fx, out = sys.argv[1], sys.argv[2]
b = open(f"{fx}/sep/client-binary/seclog3.log", "rb").read()
filetime = b"%016x" % int((time.time() + 11644473600) * 10_000_000)
h = 0
while b[h] not in b"\r\n": h += 1
while b[h] in b"\r\n": h += 1
rec = b[h:]; tab = rec.index(b"\t"); n = int(rec[:tab], 16)
body = rec[tab:n].replace(b"Web Attack: Malicious Payload Upload 2", b"System Infected: Tidserv Activity")
body = b"\t" + filetime + body[17:]  # the record's time (FILETIME, UTC) is now
open(f"{out}/seclog.log", "ab").write(b[:h] + b"%0*x" % (tab, tab + len(body)) + body)
PY
sleep 2
echo "== stopping watchpost (SIGTERM)"
kill -TERM $wp
wait $wp
