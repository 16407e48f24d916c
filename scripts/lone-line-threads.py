#!/usr/bin/env python3
"""Lone lines beside rsyslog, thread by thread.

Appends lone sshd lines 20 ms apart (after 20 warm-up lines) to a file followed by
watchpost (a `text` source, a regular-expression filter, a UDP `syslog` action, the event
store on) or by rsyslog (`imfile` in inotify mode -> `re_match` -> `omfwd` UDP, a ruleset
with a Direct queue), and measures `write()` -> datagram at a socket of its own. Per line
it also counts each thread's time slices and CPU (`/proc/<pid>/task/*/schedstat`), and
with `strace` / `strace-t` / `perf` the system calls or context switches.

    scripts/lone-line-threads.py target/release/watchpost 300
    scripts/lone-line-threads.py rsyslog 300
    scripts/lone-line-threads.py target/release/watchpost 100 strace-t

Python's own timing adds about 0.1 ms to every figure, the same for both; the
benchmark that decides is `cargo bench -p watchpost --bench vs_rsyslog` (BENCHMARKS.md).
This one says where the threads spend a lone line. Needs rsyslog (apt-get install
rsyslog) for the rsyslog side; strace and perf for those modes. Linux only.
"""

import os, socket, subprocess, sys, tempfile, time, re, signal
REGEX = "Failed password for .* from [0-9.]+ port [0-9]+"
binp, n = sys.argv[1], int(sys.argv[2]); mode = sys.argv[3] if len(sys.argv) > 3 else ""
d = tempfile.mkdtemp(); logs = os.path.join(d, "logs"); os.makedirs(logs)
f = os.path.join(logs, "auth.log"); open(f, "w").close()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]
cfg = os.path.join(d, "w.toml")
open(cfg, "w").write(f'''[agent]
state_dir = "{d}/state"

[[source]]
name = "auth"
type = "text"
path = "{f}"

[[filter]]
name = "failed-login"
match = {{ source = "auth", message = {{ regex = '{REGEX}' }} }}
actions = ["out"]

[[action]]
name = "out"
type = "syslog"
target = "udp://127.0.0.1:{port}"
format = "rfc5424"
message = "{{{{ message }}}}"
''')
if binp == "rsyslog":
    work = os.path.join(d, "work"); os.makedirs(work)
    rc = os.path.join(d, "rsyslog.conf")
    open(rc, "w").write(f'''global(workDirectory="{work}")
module(load="imfile" mode="inotify")
template(name="m" type="string" string="%msg%")
ruleset(name="r" queue.type="Direct") {{
  if re_match($msg, "{REGEX}") then action(type="omfwd" target="127.0.0.1" port="{port}" protocol="udp" template="m")
}}
input(type="imfile" file="{f}" tag="bench" ruleset="r" freshStartTail="off")
''')
    p = subprocess.Popen(["/usr/sbin/rsyslogd", "-n", "-f", rc, "-i", os.path.join(d, "rs.pid")], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "rs.log"), "w"))
else:
  p = subprocess.Popen([binp, "run", "-c", cfg], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "wp.log"), "w"))
out = open(f, "a", buffering=1)
line = lambda i: f"Dec  7 05:00:00 bench sshd[4242]: Failed password for invalid user admin from 10.1.2.3 port 22 ssh2 {i}.\n"
sock.settimeout(0.2)
for k in range(300):
    out.write(line(f"probe{k}"))
    try:
        sock.recv(65536); break
    except socket.timeout: pass
sock.settimeout(0.3)
try:
    while True: sock.recv(65536)
except socket.timeout: pass
def threads():
    r = {}
    for t in os.listdir(f"/proc/{p.pid}/task"):
        try:
            name = open(f"/proc/{p.pid}/task/{t}/comm").read().strip()
            run, wait, slices = map(int, open(f"/proc/{p.pid}/task/{t}/schedstat").read().split())
            r[t] = (name, slices, run)
        except OSError: pass
    return r
for i in range(20):
    out.write(line(f"w{i}")); sock.recv(65536); time.sleep(0.02)
tracer = None
if mode == "strace":
    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", os.path.join(d, "strace.txt"), "-p", str(p.pid)], stderr=subprocess.DEVNULL)
    time.sleep(1.0)
elif mode == "strace-t":
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", os.path.join(d, "strace.txt"), "-p", str(p.pid)], stderr=subprocess.DEVNULL)
    time.sleep(1.0)
elif mode == "perf":
    tracer = subprocess.Popen(["perf", "stat", "-e", "context-switches,cpu-migrations,task-clock", "-x", ",", "-o", os.path.join(d, "perf.txt"), "-p", str(p.pid)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
before = threads(); lat = []
sock.settimeout(2)
for i in range(n):
    time.sleep(0.02)
    t0 = time.perf_counter()
    out.write(line(f"n{i}"))
    while True:
        b = sock.recv(65536)
        if f"n{i}.".encode() in b: break
    lat.append(time.perf_counter() - t0)
after = threads()
if tracer:
    tracer.send_signal(signal.SIGINT); tracer.wait()
p.terminate(); p.wait()
lat.sort()
print(f"load {open('/proc/loadavg').read().split()[:3]}  lines {n}  p50 {lat[n//2]*1e3:.3f} ms  p90 {lat[int(n*.9)]*1e3:.3f}  p99 {lat[min(n-1,int(n*.99))]*1e3:.3f}")
tot = 0
for t, (name, s, r) in sorted(after.items()):
    if t in before:
        ds = s - before[t][1]; dr = r - before[t][2]
        if ds: print(f"  thread {name:16} wake-ups/line {ds/n:.2f}  cpu µs/line {dr/n/1000:.1f}")
        tot += ds
print(f"  all threads wake-ups/line {tot/n:.2f}")
if os.environ.get("KEEP"): print("dir", d)
if mode == "strace": print(open(os.path.join(d, "strace.txt")).read())
if mode == "strace-t":
    import collections
    names = {t: v[0] for t, v in after.items()}
    c = collections.Counter()
    for l in open(os.path.join(d, "strace.txt")):
        m = re.match(r"(\d+)\s+(?:<\.\.\. )?(\w+)", l)
        if m and "resumed" not in l[:60] or (m and "<..." in l):
            pass
        if m and not l.split(None,1)[1].startswith("<..."):
            c[(names.get(m.group(1), m.group(1)), m.group(2))] += 1
    for (t, sc), k in sorted(c.items()):
        print(f"  {t:16} {sc:14} {k/n:.2f}/line")
if mode == "perf": print(open(os.path.join(d, "perf.txt")).read())
if not os.environ.get("KEEP"):
    import shutil
    shutil.rmtree(d, ignore_errors=True)
