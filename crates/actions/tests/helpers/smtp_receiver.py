#!/usr/bin/python3
"""A real SMTP receiver (aiosmtpd) for the email action's tests (127.0.0.1 only).

--mode starttls|tls|none; with --user/--password clients must authenticate (after TLS
unless --mode none). Writes its port to --port-file once listening and appends each
accepted message to --log as one JSON line, parsed by Python's email package:
mail_from, rcpt_tos, auth_user, tls, headers, subject (RFC 2047 decoded), body (transfer
encoding decoded, LF line ends), raw.
Recipients starting with "tempfail@" get 451, with "reject@" 550.
"""
import argparse
import asyncio
import email
import email.header
import email.policy
import json
import os
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

ap = argparse.ArgumentParser()
ap.add_argument("--port-file", required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--mode", default="none", choices=["starttls", "tls", "none"])
ap.add_argument("--cert")
ap.add_argument("--key")
ap.add_argument("--user")
ap.add_argument("--password")
ap.add_argument("--only-login", action="store_true")
args = ap.parse_args()


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("tempfail@"):
            return "451 4.3.0 try again later"
        if address.startswith("reject@"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        subject = str(email.header.make_header(email.header.decode_header(msg["Subject"])))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_user": session.auth_data.decode() if isinstance(session.auth_data, bytes) else session.auth_data,
            "tls": session.ssl is not None,
            "headers": {k.lower(): str(v) for k, v in msg.items()},
            "subject": subject,
            "body": msg.get_payload(decode=True).decode("utf-8").replace("\r\n", "\n"),
            "raw": raw.decode("ascii"),
        }
        with open(args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 2.0.0 queued"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == args.user
        and auth_data.password.decode() == args.password
    )
    if not ok:
        # handled=False: aiosmtpd answers 535 itself.
        return AuthResult(success=False, handled=False)
    return AuthResult(success=True, auth_data=auth_data.login)


def context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    return ctx


def factory():
    kw = {}
    if args.user:
        kw["authenticator"] = authenticator
        kw["auth_required"] = True
        kw["auth_require_tls"] = args.mode == "starttls"
        if args.only_login:
            kw["auth_exclude_mechanism"] = ["PLAIN"]
    if args.mode == "starttls":
        kw["tls_context"] = context()
        kw["require_starttls"] = True
    return SMTP(Handler(), hostname="receiver.test", **kw)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, "127.0.0.1", 0, ssl=context() if args.mode == "tls" else None
    )
    port = server.sockets[0].getsockname()[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, args.port_file)
    await server.serve_forever()


asyncio.run(main())
