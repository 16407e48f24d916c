#!/usr/bin/python3
"""A real HTTP(S) receiver for the webhook action's tests (127.0.0.1 only).

Writes its port to --port-file once listening and appends every request it receives as
one JSON line (method, path, lower-cased headers, body) to --log. What it answers
depends on the path:
  /status/NNN[...]   status NNN with a 1000-byte body ("answer NNN xxx…")
  /chunked/NNN[...]  the same, sent with Transfer-Encoding: chunked
  /silent[...]       reads the request, never answers
  anything else      204 No Content
With --cert/--key it speaks TLS.
"""
import argparse
import http.server
import json
import os
import ssl
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port-file", required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--cert")
ap.add_argument("--key")
args = ap.parse_args()
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        record = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        with lock, open(args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        parts = self.path.split("/")
        if parts[1] == "silent":
            time.sleep(120)
            return
        if parts[1] in ("status", "chunked"):
            status = int(parts[2])
            payload = ("answer %d " % status + "x" * 1000).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            if parts[1] == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(payload), 50):
                    piece = payload[i:i + 50]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            return
        self.send_response(204)
        self.end_headers()

    do_PUT = do_POST

    def log_message(self, *a):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
if args.cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
tmp = args.port_file + ".tmp"
with open(tmp, "w") as f:
    f.write(str(server.server_address[1]))
os.rename(tmp, args.port_file)
server.serve_forever()
