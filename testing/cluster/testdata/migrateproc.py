#!/usr/bin/env python3
"""Checks of the Dovecot migration over real IMAP and SMTP (imaplib, smtplib).

migrateproc.py SCENARIO CONFIG.json
  compare  every message of the Dovecot maildir (expected, from doveadm)
           is in hastore with the same bytes (CRLF), flags, INTERNALDATE,
           UID and UIDVALIDITY, and nothing else is there
  login    USER logs in with PASSWORD (ok), and a wrong one is refused
  refused  USER cannot log in with PASSWORD; mail to USER gets a 5xx
"""
import base64
import imaplib
import json
import re
import smtplib
import sys

CFG = json.load(open(sys.argv[2]))


def mutf7(s):
    out, buf = [], []

    def flush():
        if buf:
            b = "".join(buf).encode("utf-16-be")
            out.append("&" + base64.b64encode(b).decode().rstrip("=").replace("/", ",") + "-")
            buf.clear()

    for ch in s:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def imap(node):
    return imaplib.IMAP4("127.0.0.1", CFG["nodes"][node]["imap"])


def compare():
    total = 0
    for node in range(len(CFG["nodes"])):
        m = imap(node)
        m.login(CFG["user"], CFG["password"])
        for name, box in CFG["expected"].items():
            hname = name.replace(".", "/") if name != "INBOX" else name
            typ, data = m.select('"' + mutf7(hname) + '"', readonly=True)
            assert typ == "OK", (hname, data)
            uv = int(m.response("UIDVALIDITY")[1][0])
            # 0: the source had none to keep (an mbox file)
            assert uv == box["uidvalidity"] or not box["uidvalidity"], (hname, "UIDVALIDITY", uv, box["uidvalidity"])
            exists = int(data[0])
            assert exists == len(box["messages"]), (hname, "EXISTS", exists, len(box["messages"]))
            if exists == 0:
                continue
            typ, data = m.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
            assert typ == "OK", data
            got = {}
            for item in data:
                if not isinstance(item, tuple):
                    continue
                head = item[0].decode()
                uid = int(re.search(r"UID (\d+)", head).group(1))
                flags = set(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()) - {"\\Recent"}
                date = imaplib.Internaldate2tuple(item[0])
                import time
                got[uid] = (flags, int(time.mktime(date)), item[1])
            for want in box["messages"]:
                uid = want["uid"]
                assert uid in got, (hname, "UID missing", uid, sorted(got))
                flags, date, body = got.pop(uid)
                wflags = set(want["flags"].split()) - {"\\Recent"}
                assert flags == wflags, (hname, uid, "flags", flags, wflags)
                assert date == want["date"], (hname, uid, "INTERNALDATE", date, want["date"])
                wbody = want["text"].replace("\r\n", "\n").replace("\n", "\r\n").encode()
                assert body == wbody, (hname, uid, "bytes", body[:200], wbody[:200])
                total += 1
            assert not got, (hname, "unexpected UIDs", sorted(got))
        m.logout()
    print("compared %d messages on %d nodes" % (total, len(CFG["nodes"])))


def login():
    m = imap(0)
    m.login(CFG["user"], CFG["password"])
    m.logout()
    m = imap(1)
    try:
        m.login(CFG["user"], CFG["password"] + "x")
        raise AssertionError("wrong password accepted")
    except imaplib.IMAP4.error as e:
        assert "AUTHENTICATIONFAILED" in str(e), e
    print("login ok for %s" % CFG["user"])


def refused():
    m = imap(1)
    try:
        m.login(CFG["user"], CFG["password"])
        raise AssertionError("disabled user logged in")
    except imaplib.IMAP4.error as e:
        msg = str(e)
    s = smtplib.SMTP("127.0.0.1", CFG["nodes"][2]["smtp"])
    s.ehlo("client.example.org")
    s.mail("sender@example.org")
    code, resp = s.rcpt(CFG["user"])
    s.quit()
    assert 500 <= code < 600, (code, resp)
    print("refused: IMAP %s; RCPT %d %s" % (msg, code, resp.decode()))


def main():
    globals()[sys.argv[1]]()


if __name__ == "__main__":
    main()
