#!/usr/bin/env python3
"""IMAP scenarios for mailserver/imap's tests, driven with Python's imaplib
(and smtplib for delivery). Usage: imapc.py SCENARIO '<json config>'.

The config gives, per node (0-based), "imap" (STARTTLS) and "imaps"
(implicit TLS) ports and node 1's (index 1) "smtp" port, and the users'
passwords. Each scenario asserts; a failure exits non-zero with a
traceback. What it prints on stdout (JSON) is for the test log.
"""
import imaplib
import json
import re
import smtplib
import socket
import ssl
import sys
import time

CFG = json.loads(sys.argv[2])
CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE
OUT = {}

ALICE = ("alice@example.test", CFG["pw"]["alice"])
BOB = ("bob@example.test", CFG["pw"]["bob"])


def imaps(node, user=ALICE):
    m = imaplib.IMAP4_SSL("127.0.0.1", CFG["nodes"][node]["imaps"], ssl_context=CTX, timeout=30)
    if user:
        m.login(*user)
        # imaplib keeps the pre-login capability list.
        m.capabilities = tuple(ok(m.capability())[0].decode().upper().split())
    return m


def ok(res):
    typ, data = res
    assert typ == "OK", (typ, data)
    return data


def multipart(subject):
    return (
        "From: Sender Name <sender@remote.test>\r\n"
        "To: Alice <alice@example.test>\r\n"
        "Subject: %s\r\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
        "Message-ID: <%s@remote.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n"
        "\r\n"
        "preamble\r\n"
        "--XYZ\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Hello Alice,\r\nthe quick brown fox.\r\n"
        "--XYZ\r\n"
        "Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
        "Content-Disposition: attachment; filename=\"a.bin\"\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "AAECAwQFBgcICQ==\r\n"
        "--XYZ--\r\n"
    ) % (subject, subject.replace(" ", "."))


def smtp_deliver(msg, to="alice@example.test"):
    s = smtplib.SMTP("127.0.0.1", CFG["smtp"], timeout=30)
    s.sendmail("sender@remote.test", [to], msg.encode())
    s.quit()


def fetch1(m, uid, item):
    """UID FETCH of one item; returns the literal (bytes) or the line."""
    data = ok(m.uid("FETCH", str(uid), item))
    for d in data:
        if isinstance(d, tuple):
            return d[1]
    return data[0]


def uids(m, crit="ALL"):
    data = ok(m.uid("SEARCH", None, crit))
    return [int(x) for x in data[0].split()]


def untagged(m, name):
    return m.untagged_responses.pop(name, [])


def sc_auth():
    # Wrong password, unknown user.
    for u in [(ALICE[0], "wrong"), ("nobody@example.test", "x")]:
        m = imaps(0, None)
        try:
            m.login(*u)
            raise AssertionError("login succeeded for %r" % (u,))
        except imaplib.IMAP4.error as e:
            assert "AUTHENTICATIONFAILED" in str(e) or "failed" in str(e).lower(), e
        m.logout()
    # Plain port: no login before STARTTLS.
    m = imaplib.IMAP4("127.0.0.1", CFG["nodes"][0]["imap"], timeout=30)
    caps = m.capabilities
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps, caps
    try:
        m.login(*ALICE)
        raise AssertionError("plaintext login accepted")
    except imaplib.IMAP4.error:
        pass
    m.shutdown()
    m = imaplib.IMAP4("127.0.0.1", CFG["nodes"][0]["imap"], timeout=30)
    m.starttls(ssl_context=CTX)
    m.login(*ALICE)
    caps = ok(m.capability())[0].decode()
    m.capabilities = tuple(caps.upper().split())  # imaplib keeps the pre-login list
    for c in ["IMAP4rev2", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "NAMESPACE", "LIST-STATUS", "ENABLE"]:
        assert c in caps.split(), (c, caps)
    ok(m.enable("IMAP4rev2"))
    ok(m.namespace())
    m.logout()
    # AUTHENTICATE PLAIN over implicit TLS.
    m = imaps(1, None)
    ok(m.authenticate("PLAIN", lambda _: ("\0%s\0%s" % ALICE).encode()))
    m.logout()
    OUT["caps"] = caps


def sc_read():
    """Deliver on node 2 (SMTP) and APPEND on node 2, read on node 1."""
    raw = multipart("Read me")
    smtp_deliver(raw)
    n2 = imaps(1)
    exact = multipart("Appended").encode()
    data = ok(n2.append("INBOX", r"(\Flagged)", '"27-Nov-2026 10:00:00 +0100"', exact))
    mo = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    assert mo, data
    app_uid = int(mo.group(2))
    n2.logout()

    m = imaps(0)
    ok(m.select("INBOX"))
    found = uids(m, 'SUBJECT "Read me"')
    assert len(found) == 1, found
    uid = found[0]
    body = fetch1(m, uid, "(BODY.PEEK[])")
    assert body.endswith(raw.encode()), body[-200:]
    assert body.startswith(b"Return-Path:") or body.startswith(b"Received:"), body[:80]
    # Byte-identical: the APPENDed message, fetched on another node.
    assert fetch1(m, app_uid, "(BODY.PEEK[])") == exact
    line = ok(m.uid("FETCH", str(app_uid), "(FLAGS INTERNALDATE RFC822.SIZE)"))[0].decode()
    assert "\\Flagged" in line and "27-Nov-2026 10:00:00 +0100" in line and "RFC822.SIZE %d" % len(exact) in line, line

    env = ok(m.uid("FETCH", str(uid), "(ENVELOPE)"))[0].decode()
    assert '"Read me"' in env and '"Sender Name" NIL "sender" "remote.test"' in env and "<Read.me@remote.test>" in env, env
    bs = ok(m.uid("FETCH", str(uid), "(BODYSTRUCTURE)"))[0].decode()
    assert '"mixed"' in bs.lower() and '"a.bin"' in bs and '"text" "plain"' in bs.lower() and '"base64"' in bs.lower(), bs
    ok(m.uid("FETCH", str(uid), "(BODY)"))

    part1 = fetch1(m, uid, "(BODY.PEEK[1])")
    assert part1 == b"Hello Alice,\r\nthe quick brown fox.", part1
    mime2 = fetch1(m, uid, "(BODY.PEEK[2.MIME])")
    assert mime2.startswith(b"Content-Type: application/octet-stream") and mime2.endswith(b"\r\n\r\n"), mime2
    assert fetch1(m, uid, "(BODY.PEEK[2])") == b"AAECAwQFBgcICQ==", "part 2"
    hf = fetch1(m, uid, "(BODY.PEEK[HEADER.FIELDS (Subject FROM)])")
    assert hf == b"From: Sender Name <sender@remote.test>\r\nSubject: Read me\r\n\r\n", hf
    hdr = fetch1(m, uid, "(BODY.PEEK[HEADER])")
    assert hdr.endswith(b"\r\n\r\n") and b"Subject: Read me" in hdr and b"preamble" not in hdr
    nf = fetch1(m, uid, "(BODY.PEEK[HEADER.FIELDS.NOT (Subject)])")
    assert b"Subject:" not in nf and b"Message-ID:" in nf
    text = fetch1(m, app_uid, "(BODY.PEEK[TEXT])")
    assert exact.endswith(text) and text.startswith(b"preamble"), text[:40]
    part = fetch1(m, app_uid, "(BODY.PEEK[]<10.20>)")
    assert part == exact[10:30], part
    part = fetch1(m, app_uid, "(BODY.PEEK[1]<6.5>)")
    assert part == b"Alice", part
    # BINARY: the attachment base64-decoded, and its size.
    assert fetch1(m, uid, "(BINARY.PEEK[2])") == bytes(range(10)), "BINARY[2]"
    line = ok(m.uid("FETCH", str(uid), "(BINARY.SIZE[2])"))[0].decode()
    assert "BINARY.SIZE[2] 10" in line, line
    flags = ok(m.uid("FETCH", str(uid), "(FLAGS)"))[0].decode()
    assert "\\Seen" not in flags, flags
    fetch1(m, uid, "(BODY[TEXT])")
    flags = ok(m.uid("FETCH", str(uid), "(FLAGS)"))[0].decode()
    assert "\\Seen" in flags, flags
    # SEARCH keys.
    assert app_uid in uids(m, "FLAGGED") and uid not in uids(m, "FLAGGED")
    assert uid in uids(m, "SEEN")
    assert uids(m, 'BODY "quick brown"') == sorted([uid, app_uid])
    assert uids(m, 'HEADER Message-ID "Read.me"') == [uid]
    assert uids(m, "LARGER %d" % (len(exact) + 1)) == [uid]  # the SMTP one has trace headers
    assert uids(m, "SENTSINCE 26-Nov-2026 SENTBEFORE 28-Nov-2026") == sorted([uid, app_uid])
    assert uids(m, "UID %d" % uid) == [uid]
    assert uids(m, 'OR FLAGGED SUBJECT "Read me"') == sorted([uid, app_uid])
    assert uids(m, "NOT SEEN UNFLAGGED") == []
    typ, data = m.search(None, "ALL")
    assert typ == "OK" and len(data[0].split()) >= 2
    m.logout()
    OUT["uid"] = uid


def wait_for(m, pred, timeout=10):
    """NOOP until pred(untagged responses so far) holds."""
    t0 = time.time()
    seen = {}
    noops = 0
    while time.time() - t0 < timeout:
        ok(m.noop())
        noops += 1
        for k in ("EXISTS", "EXPUNGE", "FETCH"):
            seen.setdefault(k, []).extend(untagged(m, k))
        if pred(seen):
            return seen, noops
        time.sleep(0.05)
    raise AssertionError("timed out; saw %r" % seen)


def sc_cross():
    """Flags, expunges and new mail across nodes, and IDLE."""
    a = imaps(0)
    b = imaps(2)
    ok(a.select("INBOX"))
    ok(b.select("INBOX"))
    exact = multipart("Cross").encode()
    data = ok(b.append("INBOX", None, None, exact))
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
    # NOOP catches up with the leader first: the first one sees the change.
    seen, noops = wait_for(a, lambda s: len(s["EXISTS"]) > 0)
    assert noops == 1, noops
    assert uid in uids(a)
    ok(b.uid("STORE", str(uid), "+FLAGS", r"(\Flagged $Label1)"))
    seen, noops = wait_for(a, lambda s: any(b"\\Flagged" in x and b"$Label1" in x for x in s["FETCH"]))
    assert noops == 1, noops
    ok(b.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)"))
    ok(b.expunge())
    seen, noops = wait_for(a, lambda s: len(s["EXPUNGE"]) > 0)
    assert noops == 1, noops
    assert uid not in uids(a)

    # IDLE on node 1, delivery through node 2.
    tag = a._new_tag()
    a.send(tag + b" IDLE\r\n")
    line = a.readline()
    assert line.startswith(b"+"), line
    t0 = time.time()
    smtp_deliver(multipart("Idle"))
    delivered = time.time() - t0
    a.sock.settimeout(10)
    line = a.readline()
    notified = time.time() - t0
    assert re.match(rb"\* \d+ EXISTS", line), line
    a.send(b"DONE\r\n")
    while True:
        line = a.readline()
        if line.startswith(tag):
            assert b"OK" in line, line
            break
    a.sock.settimeout(30)
    OUT["idle_notified_s"] = round(notified, 3)
    OUT["smtp_delivery_s"] = round(delivered, 3)
    assert notified - delivered < 2, OUT
    a.logout()
    b.logout()


def sc_stress():
    """Concurrent deliveries through node 2 and expunges through node 3
    while a session on node 1 IDLEs: the EXISTS/EXPUNGE stream it gets
    must add up to the mailbox it then finds."""
    import threading
    a = imaps(0)
    ok(a.select("INBOX"))
    n = int(untagged(a, "EXISTS")[-1])
    tag = a._new_tag()
    a.send(tag + b" IDLE\r\n")
    assert a.readline().startswith(b"+")
    b = imaps(2)
    ok(b.select("INBOX"))

    def deliver(k):
        for i in range(6):
            smtp_deliver(multipart("Stress %d-%d" % (k, i)))
    threads = [threading.Thread(target=deliver, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for _ in range(5):
        time.sleep(0.05)
        ok(b.noop())
        got = uids(b, 'SUBJECT "Stress"')
        if got:
            ok(b.uid("STORE", ",".join(map(str, got[:2])), "+FLAGS.SILENT", r"(\Deleted)"))
            ok(b.expunge())
    for t in threads:
        t.join()
    ok(b.noop())
    ok(b.uid("STORE", "1:*", "+FLAGS.SILENT", r"($Seen2)"))
    b.logout()
    time.sleep(0.5)
    a.send(b"DONE\r\n")
    exists = expunges = fetches = 0
    a.sock.settimeout(10)
    while True:
        line = a.readline()
        if line.startswith(tag):
            assert b"OK" in line, line
            break
        if line.startswith(b"* FLAGS (") or line.startswith(b"* OK [PERMANENTFLAGS ("):
            assert b"$Seen2" in line, line  # the new keyword announced
            continue
        if re.match(rb"\* \d+ RECENT\r\n", line):
            continue  # new mail this session was told of first
        mo = re.match(rb"\* (\d+) (EXISTS|EXPUNGE|FETCH)", line)
        assert mo, line
        k = int(mo.group(1))
        if mo.group(2) == b"EXISTS":
            assert k >= n, (k, n)  # never shrinks
            n = k
            exists += 1
        elif mo.group(2) == b"EXPUNGE":
            assert 1 <= k <= n, (k, n)
            n -= 1
            expunges += 1
        else:
            assert 1 <= k <= n, (k, n)
            fetches += 1
    a.sock.settimeout(30)
    final = len(uids(a))
    assert n == final, (n, final)
    OUT.update(exists=exists, expunges=expunges, fetches=fetches, messages=final)
    a.logout()


def sc_users():
    """A user reaches only their own mailboxes."""
    m = imaps(1, BOB)
    data = ok(m.select("INBOX"))
    assert data == [b"0"], data
    names = [l.decode() for l in ok(m.list())]
    assert all("alice" not in n for n in names), names
    for name in ["alice@example.test/INBOX", "../alice@example.test/INBOX", "mail.alice@example.test"]:
        typ, _ = m.select('"%s"' % name)
        assert typ == "NO", name
    m.logout()


def sc_examine():
    m = imaps(0)
    exact = multipart("Examine").encode()
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", ok(m.append("INBOX", r"(\Deleted)", None, exact))[0]).group(1))
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK"
    assert "READ-ONLY" in m.untagged_responses or any(b"READ-ONLY" in d for d in data if isinstance(d, bytes)), data
    typ, data = m.uid("STORE", str(uid), "+FLAGS", r"(\Flagged)")
    assert typ == "NO", (typ, data)
    typ, data = m.expunge()
    assert typ == "NO", (typ, data)
    fetch1(m, uid, "(BODY[])")
    flags = ok(m.uid("FETCH", str(uid), "(FLAGS)"))[0].decode()
    assert "\\Seen" not in flags, flags
    ok(m.close())  # must not expunge
    ok(m.select("INBOX"))
    assert uid in uids(m)
    # UID EXPUNGE removes only the named message.
    ok(m.uid("EXPUNGE", str(uid)))
    assert uid not in uids(m)
    m.logout()


def sc_mailboxes():
    m = imaps(2)
    # The hierarchy delimiter (RFC 3501 6.3.8), as clients ask it first.
    assert ok(m.list('""', '""')) == [b'(\\Noselect) "/" ""'], m.list('""', '""')
    lst = [l.decode() for l in ok(m.list())]
    for want in ['\\Sent', '\\Drafts', '\\Trash', '\\Junk']:
        assert any(want in l for l in lst), (want, lst)
    ok(m.create("Work/Projects/2026"))
    lst = [l.decode() for l in ok(m.list('""', "Work/*"))]
    assert any(l.endswith('"Work/Projects/2026"') or l.endswith("Work/Projects/2026") for l in lst), lst
    ok(m.rename("Work", "Archive/Work"))
    lst = [l.decode() for l in ok(m.list('""', "*"))]
    assert any("Archive/Work/Projects/2026" in l for l in lst) and not any(l.endswith(' Work') or '"Work"' in l for l in lst), lst
    ok(m.delete("Archive/Work/Projects/2026"))
    typ, _ = m.create("INBOX")
    assert typ == "NO"
    ok(m.subscribe("Archive/Work"))
    lsub = [l.decode() for l in ok(m.lsub())]
    assert any("Archive/Work" in l for l in lsub), lsub
    ok(m.unsubscribe("Archive/Work"))
    lsub = [l for l in ok(m.lsub()) if l]
    assert not any(b"Archive/Work" in l for l in lsub), lsub
    st = ok(m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE)"))[0].decode()
    assert "MESSAGES" in st and "UIDVALIDITY" in st, st
    # LIST-STATUS and the SPECIAL-USE selection.
    ok(m._simple_command("LIST", '""', '"*"', "RETURN", "(STATUS (MESSAGES UNSEEN))"))
    st = untagged(m, "STATUS")
    assert any(b"INBOX" in x and b"MESSAGES" in x for x in st), st
    untagged(m, "LIST")
    ok(m._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"'))
    su = [x.decode() for x in untagged(m, "LIST")]
    assert len(su) == 4 and not any("INBOX" in x for x in su), su

    # APPEND/COPY/MOVE with UIDPLUS.
    ok(m.create("Dest"))
    ok(m.select("INBOX"))
    src = uids(m)
    assert src, "INBOX empty"
    ok(m.uid("COPY", "%d" % src[0], "Dest"))
    cu = untagged(m, "COPYUID")
    assert cu and re.match(rb"\d+ %d \d+" % src[0], cu[-1]), cu
    typ, data = m.uid("MOVE", "%d" % src[-1], "Dest")
    assert typ == "OK", (typ, data)
    cu = untagged(m, "COPYUID")
    assert cu and re.match(rb"\d+ %d \d+" % src[-1], cu[-1]), cu
    assert untagged(m, "EXPUNGE"), "MOVE sent no EXPUNGE"
    assert src[-1] not in uids(m)
    typ, data = m.uid("COPY", "%d" % src[0], "NoSuchBox")
    assert typ == "NO" and b"TRYCREATE" in data[0], data
    ok(m.select("Dest"))
    assert len(uids(m)) == 2
    # A parent deleted while its child stays is listed as \NonExistent.
    ok(m.create("Parent/Child"))
    ok(m.delete("Parent"))
    lst = [l.decode() for l in ok(m.list('""', "%"))]
    assert any("NonExistent" in l and "Parent" in l for l in lst), lst
    # The selected mailbox deleted through another node: its messages are
    # expunged for this session at the next NOOP.
    other = imaps(0)
    ok(other.delete("Dest"))
    other.logout()
    seen, _ = wait_for(m, lambda s: len(s["EXPUNGE"]) == 2)
    assert uids(m) == []
    m.logout()

    # IMAP4rev2 enabled: ESEARCH answers.
    m = imaps(1)
    ok(m.enable("IMAP4rev2"))
    ok(m.select("INBOX"))
    typ, data = m._simple_command("UID", "SEARCH", "RETURN", "(MIN MAX COUNT)", "ALL")
    assert typ == "OK", (typ, data)
    es = untagged(m, "ESEARCH")
    assert es and b"COUNT" in es[-1] and b"MIN" in es[-1], es
    m.logout()


def sc_quota():
    m = imaps(0, ("small@example.test", CFG["pw"]["small"]))
    typ, data = m.append("INBOX", None, None, b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n")
    assert typ == "NO" and b"OVERQUOTA" in data[0], (typ, data)
    m.logout()


def sc_idlehold():
    """Holds N connections in IDLE until stdin closes (memory measurement)."""
    n = int(sys.argv[3])
    conns = []
    for i in range(n):
        m = imaps(i % 3, BOB)
        ok(m.select("INBOX"))
        if len(sys.argv) < 5 or sys.argv[4] != "noidle":
            tag = m._new_tag()
            m.send(tag + b" IDLE\r\n")
            assert m.readline().startswith(b"+")
        conns.append(m)
    print("ready", flush=True)
    sys.stdin.read()


def main():
    globals()["sc_" + sys.argv[1]]()
    json.dump(OUT, sys.stdout)


if __name__ == "__main__":
    main()
