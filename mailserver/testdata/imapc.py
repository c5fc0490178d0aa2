#!/usr/bin/env python3
"""Logs in over IMAP with Python's imaplib and prints, as JSON, the
Subject: and Message-ID: of every message in the mailboxes asked for, for
mailserver's tests: where did mail land?

Input (JSON on stdin):
  {"host": "127.0.0.1", "port": 1143, "user": "a@b", "password": "...",
   "mailboxes": ["INBOX", "Lists"]}
Output (JSON on stdout):
  {"INBOX": [{"subject": "...", "message_id": "..."}, ...], "Lists": [...]}
A mailbox that cannot be selected maps to null.
"""
import email
import imaplib
import json
import sys


def main():
    spec = json.load(sys.stdin)
    m = imaplib.IMAP4(spec["host"], spec["port"], timeout=60)
    m.login(spec["user"], spec["password"])
    out = {}
    for name in spec["mailboxes"]:
        typ, _ = m.select('"%s"' % name, readonly=True)
        if typ != "OK":
            out[name] = None
            continue
        typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT MESSAGE-ID)])")
        msgs = []
        for part in data or []:
            if isinstance(part, tuple):
                h = email.message_from_bytes(part[1])
                msgs.append({"subject": h.get("Subject", ""), "message_id": h.get("Message-ID", "")})
        out[name] = msgs
        m.close()
    m.logout()
    json.dump(out, sys.stdout)


main()
