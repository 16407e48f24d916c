#!/usr/bin/env bash
# Runs the watchpost daemon on its built-in configuration and shows it react: it writes a
# Symantec Endpoint Protection Auto-Protect detection (a line of the client's daily AV
# log) and an IPS "System Infected:" alert (a record of the client's binary security log,
# seclog.log) into the log directory the daemon follows, and prints the syslog messages
# the daemon sends to a stand-in SIEM. Both SEP records are written by this script in
# SEP's own formats; nothing outside the repository is needed.
# Everything lives in a temporary directory; nothing is installed.
#
# Needs: a Rust toolchain (see README.md) and python3. WATCHPOST_BIN=PATH runs that binary
# instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${WATCHPOST_BIN:-}" ]; then
  bin=$WATCHPOST_BIN
else
  bin=${CARGO_TARGET_DIR:-target}/release/watchpost
  if [ ! -x "$bin" ]; then
    echo "== building watchpost (release). The first build compiles about 200 crates and takes"
    echo "   about 10 minutes on 2 cores; later builds take seconds. Cargo shows its progress:"
  else
    echo "== building watchpost (release; up to date in seconds)"
  fi
  cargo build --release --locked -p watchpost
fi

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
"$bin" run &
wp=$!
sleep 1

echo "== SEP writes an Auto-Protect detection to today's AV log"
python3 - "$demo/sep" <<'PY'
# One line of the client's daily AV log (Logs\MMDDYYYY.Log, SEP 14.2: 91 comma-separated
# fields, CRLF), the "virus found" line (event 5) of an Auto-Protect detection of the
# EICAR test file. Field numbers as in docs/formats.md.
import datetime, os, sys
out = sys.argv[1]
now = datetime.datetime.now()
f = [""] * 91
f[0] = "%02X%02X%02X%02X%02X%02X" % (now.year - 1970, now.month - 1, now.day, now.hour, now.minute, now.second)
f[1] = "5"                  # event: virus found
f[2] = "1"                  # category: infection
f[3] = "2"                  # logger: Real_Time (Auto-Protect)
f[4] = os.uname().nodename  # computer
f[5] = "demo"               # user
f[6] = "EICAR Test String"  # risk name
f[7] = r"C:\Users\demo\Downloads\eicar.com"
f[8], f[9], f[10] = "5", "1", "1"     # wanted: clean, else quarantine; taken: quarantine
f[11], f[12] = "2147483952", "33570852"  # virus type, flags
f[13] = '"Virus found: EICAR Test String"'
for i in (14, 16, 18, 20, 21, 22, 23, 24, 25, 27, 30):
    f[i] = "0"
f[17] = "101\t{86ECAC14-384D-4D77-9A9D-9DE4E01D106A}\t0\t0"
f[19] = "4294779570"
f[26] = "%04d%02d%02d.001" % (now.year, now.month, now.day)  # definitions in use
f[28], f[29] = "2", "4"     # clean info, delete info
f[32] = "{F4B4092E-6B07-4C0B-989A-D3AA5C0D11BA}"
f[36], f[37], f[38] = "DEMO", "10:E7:C6:D9:93:E4", "14.2.1031.64"
f[54] = "0"
f[56] = "f939a5e8-33d6-4fc6-8f13-5631b8ad00da"
f[57] = "0"
f[61], f[62], f[63], f[64] = "1", "3", "1", "0"
f[71], f[72] = "127", "0"
f[77] = f[0]                # scan start time
f[81] = "Default"           # location
with open(f"{out}/{now:%m%d%Y}.Log", "ab") as log:
    log.write((",".join(f) + "\r\n").encode())
PY
sleep 1
echo "== SEP's IPS logs a 'System Infected:' alert to seclog.log"
python3 - "$demo/sep" <<'PY'
# The client's binary security log (Data\Logs\seclog.log): a header line of 7 TAB-separated
# hex fields (log type 1 = security), then records of TAB-separated fields, each starting
# with its Entry Length (the record's byte length, 8 hex digits) and its time (a Windows
# FILETIME, UTC, 16 hex digits). IPv4 addresses are little-endian hex, MAC addresses 16 raw
# bytes. Field numbers as in docs/formats.md.
import os, socket, sys, time
out = sys.argv[1]
filetime = "%016x" % int((time.time() + 11644473600) * 10_000_000)
ip = lambda a: "%08x" % int.from_bytes(socket.inet_aton(a), "little")
desc = r"[SID: 23179] System Infected: Tidserv Activity 2 attack blocked. Traffic has been blocked for this application: C:\Windows\explorer.exe"
fields = [
    None, filetime,
    "000000ce",                      # event: IPS intrusion detected (206)
    "00000003",                      # severity
    ip("10.0.0.5"), ip("203.0.113.7"),  # local, remote address
    "00000002",                      # protocol: TCP
    "00000000",                      # hack type
    "00000002",                      # direction: outbound
    filetime, filetime,              # begin, end
    "00000001",                      # occurrences
    "00000000",                      # size of the attached packet data (none)
    desc, "", r"C:\Windows\explorer.exe", "",
    "\0" * 16, "\0" * 16,            # local, remote MAC
    "Default", "demo", "DEMO",       # location, user, domain
    "00005a8b", "00000000",          # signature id 23179, sub-id
    "00000002", "00000002",
    "000001bb", "0000c350",          # remote port 443, local port 50000
    "0" * 32, "0" * 32,              # IPv6 addresses (none)
    "System Infected: Tidserv Activity 2",
    "", "", "",
    "14.2.1031.64", "4B78-05/29/2019 03:23:43 714", "00000001",
    "", "0" * 64,                    # MD5, SHA-256 of the application
]
body = ("\t" + "\t".join(fields[1:]) + "\r\n").encode("latin-1")
record = b"%08x" % (8 + len(body)) + body
path = f"{out}/seclog.log"
if not os.path.exists(path):
    with open(path, "wb") as log:
        log.write(b"00000001\t00080000\t00000000\t00000001\t00000000\t0000000000000001\t0000000e\r\n")
with open(path, "ab") as log:
    log.write(record)
PY
sleep 2
echo "== stopping watchpost (SIGTERM)"
kill -TERM $wp
wait $wp
