#!/usr/bin/env python3
"""Mail scenarios for testing/cluster's multi-process tests (mail_proc_test.go),
driven with Python's smtplib and imaplib against `hastore serve` processes.

Usage: mailproc.py SCENARIO '<json config>'

Config: {"nodes": [{"smtp": P, "submission": P, "lmtp": P, "imap": P}, ...],
         "pw": {"alice": "...", ...}, "domain": "example.test", ...scenario keys}

Each scenario asserts; a failure exits non-zero with a traceback. Lines
"STEP <name>" on stdout ask the Go test to act (kill or restart a node);
the scenario then waits for a line on stdin. The last stdout line is a
JSON summary for the test log.
"""
import imaplib
import json
import re
import smtplib
import sys
import threading
import time

CFG = json.loads(sys.argv[2])
NODES = CFG["nodes"]
DOMAIN = CFG.get("domain", "example.test")
OUT = {}


def addr(user):
    return "%s@%s" % (user, DOMAIN)


def ok(res):
    typ, data = res
    assert typ == "OK", (typ, data)
    return data


def step(name):
    """Asks the Go side to do something and waits until it has."""
    sys.stdout.write("STEP %s\n" % name)
    sys.stdout.flush()
    line = sys.stdin.readline()
    assert line, "stdin closed at step %s" % name


def imap(node, user="alice", pw=None):
    m = imaplib.IMAP4("127.0.0.1", NODES[node]["imap"], timeout=30)
    m.login(addr(user), pw if pw is not None else CFG["pw"][user])
    return m


def message(token, body="", to="alice"):
    """A message whose Subject and Message-ID carry token. Includes a line
    starting with a dot (SMTP dot-stuffing) and 8-bit UTF-8 text."""
    return (
        "From: Sender <sender@remote.test>\r\n"
        "To: %s\r\n"
        "Subject: %s\r\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <%s@remote.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Hello, token %s.\r\n"
        ".a line that starts with a dot\r\n"
        "..two dots\r\n"
        "Gr\u00fc\u00dfe, \u65e5\u672c\r\n"
        "%s"
    ) % (addr(to), token, token, token, body)


def send(node, token, rcpts, lmtp=False, body=""):
    """Delivers one message; returns (accepted, replies). For LMTP,
    accepted is the list of recipients that got a 250."""
    raw = message(token, body, rcpts[0]).encode()
    port = NODES[node]["lmtp" if lmtp else "smtp"]
    cls = smtplib.LMTP if lmtp else smtplib.SMTP
    s = cls("127.0.0.1", port, timeout=60)
    try:
        s.ehlo("client.test")
        try:
            refused = s.sendmail("sender@remote.test", [addr(r) for r in rcpts], raw, mail_options=["BODY=8BITMIME"])
        except smtplib.SMTPRecipientsRefused as e:
            return [], {k: [v[0], v[1].decode("utf-8", "replace")] for k, v in e.recipients.items()}
        except smtplib.SMTPDataError as e:
            return [], {"data": [e.smtp_code, e.smtp_error.decode("utf-8", "replace")]}
        except smtplib.SMTPResponseException as e:
            return [], {"resp": [e.smtp_code, e.smtp_error.decode("utf-8", "replace")]}
        return [r for r in rcpts if addr(r) not in refused], {k: [v[0], v[1].decode("utf-8", "replace")] for k, v in refused.items()}
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass


def send_retry(nodes, token, rcpts, lmtp=False, timeout=45):
    """send through nodes in turn until every recipient is accepted (for
    the moments after a node dies, when the cluster may answer 4xx)."""
    t0 = time.time()
    last = None
    i = 0
    while time.time() - t0 < timeout:
        node = nodes[i % len(nodes)]
        i += 1
        try:
            acc, rep = send(node, token, rcpts, lmtp)
        except (OSError, smtplib.SMTPException) as e:
            last = repr(e)
            time.sleep(0.3)
            continue
        if sorted(acc) == sorted(rcpts):
            return node
        last = rep
        # Only temporary failures are retried.
        for v in rep.values():
            assert 400 <= v[0] < 500, (token, rep)
        time.sleep(0.3)
    raise AssertionError("delivery of %s not accepted within %ds: %r" % (token, timeout, last))


def literal(data):
    for d in data:
        if isinstance(d, tuple):
            return d[1]
    raise AssertionError("no literal in %r" % (data,))


def by_token(m):
    """Maps each Subject in the selected mailbox to [(uid, flags), ...]."""
    data = ok(m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    out = {}
    order = []
    for d in data:
        if not isinstance(d, tuple):
            continue
        meta = d[0].decode()
        uid = int(re.search(r"UID (\d+)", meta).group(1))
        flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()
        subj = d[1].decode().split(":", 1)[1].strip()
        out.setdefault(subj, []).append((uid, flags))
        order.append(uid)
    return out, order


def check_body(got, raw, exact=False):
    """The delivered message comes back byte-identical, after the trace
    header lines the server prepends (Return-Path:, Received:)."""
    if exact:
        assert got == raw, (got[:300], raw[:300])
        return
    assert got.endswith(raw), (got[-300:], raw[-300:])
    prefix = got[: len(got) - len(raw)]
    assert prefix, "no trace headers"
    for line in re.split(rb"\r\n(?![ \t])", prefix.rstrip(b"\r\n")):
        assert line.split(b":", 1)[0] in (b"Return-Path", b"Received"), line


def fetch_token(m, token):
    found = ok(m.uid("SEARCH", None, "HEADER", "Message-ID", '"%s@remote.test"' % token))[0].split()
    assert len(found) == 1, (token, found)
    return int(found[0]), literal(ok(m.uid("FETCH", found[0].decode(), "(BODY.PEEK[])")))


def sc_deliver():
    """Delivered through one node, read through another, byte-identical."""
    big = "".join("line %05d of a larger body, to span several chunks\r\n" % i for i in range(4000))
    cases = [  # (token, via node, lmtp, recipients, read on node)
        ("smtp-n1", 0, False, ["alice"], 1),
        ("lmtp-n2", 1, True, ["alice", "bob"], 2),
        ("smtp-n3-big", 2, False, ["bob"], 0),
        ("lmtp-n1", 0, True, ["alice"], 2),
    ]
    for token, node, lmtp, rcpts, _ in cases:
        acc, rep = send(node, token, rcpts, lmtp, big if "big" in token else "")
        assert sorted(acc) == sorted(rcpts), (token, acc, rep)
    for token, node, lmtp, rcpts, reader in cases:
        raw = message(token, big if "big" in token else "", rcpts[0]).encode()
        for user in rcpts:
            m = imap(reader, user)
            ok(m.select("INBOX"))
            uid, got = fetch_token(m, token)
            check_body(got, raw)
            size = ok(m.uid("FETCH", str(uid), "(RFC822.SIZE)"))[0].decode()
            assert "RFC822.SIZE %d" % len(got) in size, (size, len(got))
            m.logout()
    # APPEND on node 1, read on node 3: exactly the same bytes.
    exact = message("appended", "no trace headers here\r\n").encode()
    m = imap(0)
    data = ok(m.append("INBOX", r"(\Flagged)", None, exact))
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
    m.logout()
    m = imap(2)
    ok(m.select("INBOX"))
    got = literal(ok(m.uid("FETCH", str(uid), "(BODY.PEEK[])")))
    check_body(got, exact, exact=True)
    assert b"\\Flagged" in ok(m.uid("FETCH", str(uid), "(FLAGS)"))[0]
    tokens, _ = by_token(m)
    assert sorted(tokens) == ["appended", "lmtp-n1", "lmtp-n2", "smtp-n1"], sorted(tokens)
    m.logout()
    OUT["big_bytes"] = len(big)


class Background:
    """Delivers continuously through every node (SMTP and LMTP in turn),
    the dying one included, until stopped: what got a 250 is acked; what
    failed or lost its connection is uncertain (stored once or not at all)."""

    def __init__(self, nodes, user):
        self.nodes, self.user = nodes, user
        self.acked, self.uncertain, self.errors = [], [], []
        self.stop = threading.Event()
        self.last_ack = 0
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        k = 0
        while not self.stop.is_set():
            tok = "bg-%04d" % k
            node = self.nodes[k % len(self.nodes)]
            try:
                acc, rep = send(node, tok, [self.user], lmtp=(k // len(self.nodes)) % 2 == 1)
            except (OSError, smtplib.SMTPException) as e:
                acc, rep = [], repr(e)
            if acc == [self.user]:
                self.acked.append(tok)
                self.last_ack = time.time()
            else:
                self.uncertain.append(tok)
                self.errors.append((node, str(rep)[:120]))
                time.sleep(0.1)
            k += 1

    def join(self):
        self.stop.set()
        self.t.join()


def check_mailbox(tokens, acked, uncertain=(), flagged=None):
    """Every acked token exactly once, uncertain ones at most once, nothing
    else; flagged maps a token to a flag it must have."""
    missing = [t for t in acked if t not in tokens]
    assert not missing, ("acknowledged messages missing", missing)
    extra = [t for t in tokens if t not in acked and t not in uncertain]
    assert not extra, ("unknown messages", extra)
    dup = {t: v for t, v in tokens.items() if len(v) != 1}
    assert not dup, ("stored more than once", dup)
    for tok, fl in (flagged or {}).items():
        assert fl in tokens[tok][0][1], (tok, tokens[tok])


def sc_killed():
    """An IMAP session on the victim node; the victim is SIGKILLed while
    deliveries run through every node; the client reconnects to another
    node and finds every acknowledged message with the flags it set;
    delivery goes on through the survivors; the restarted node serves all
    of it."""
    victim = CFG["victim"]
    others = [i for i in range(len(NODES)) if i != victim]
    acked = []
    for k in range(6):
        tok = "before-%d" % k
        acc, rep = send(k % 3, tok, ["alice"], lmtp=(k % 2 == 1))
        assert acc == ["alice"], (tok, rep)
        acked.append(tok)
    m = imap(victim)
    ok(m.select("INBOX"))
    tokens, _ = by_token(m)
    assert sorted(tokens) == sorted(acked), tokens
    flagged = {"before-1": r"\Flagged", "before-4": r"\Seen", "before-5": "$Custom"}
    for tok, fl in flagged.items():
        ok(m.uid("STORE", str(tokens[tok][0][0]), "+FLAGS", "(%s)" % fl))
    ok(m.noop())
    # A session on a survivor stays usable through the kill.
    surv = imap(others[0])
    ok(surv.select("INBOX"))
    bg = Background(list(range(len(NODES))), "alice")
    time.sleep(0.5)
    step("kill")
    killed_at = time.time()
    # The old connection is dead.
    try:
        m.sock.settimeout(10)
        m.noop()
        raise AssertionError("NOOP on the killed node's connection succeeded")
    except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
        pass
    # Reconnect to another node (bounded: it may be electing a leader).
    m2 = None
    t0 = time.time()
    while m2 is None:
        for node in others:
            try:
                m2 = imap(node)
                ok(m2.select("INBOX"))
                OUT["reconnected_to"] = node
                OUT["reconnect_s"] = round(time.time() - t0, 2)
                break
            except (OSError, imaplib.IMAP4.error, AssertionError) as e:
                m2 = None
                last = e
        if m2 is None:
            assert time.time() - t0 < 45, "no survivor took the session: %r" % (last,)
            time.sleep(0.3)
    tokens, _ = by_token(m2)
    for tok in acked:
        flags = tokens[tok][0][1]
        if tok in flagged:
            assert flagged[tok] in flags, (tok, flags)
        else:
            assert not [f for f in flags if f in (r"\Flagged", r"\Seen", "$Custom")], (tok, flags)
    # Deliveries keep working through the survivors, SMTP and LMTP.
    for k in range(4):
        tok = "during-%d" % k
        send_retry([others[k % 2], others[(k + 1) % 2]], tok, ["alice"], lmtp=(k % 2 == 0))
        acked.append(tok)
    time.sleep(0.5)
    bg.join()
    # Background deliveries through the survivors got through again.
    assert bg.last_ack > killed_at, "no background delivery acknowledged after the kill"
    kinds = {}
    for node, e in bg.errors:
        k = "n%d %s" % (node + 1, e[:60])
        kinds[k] = kinds.get(k, 0) + 1
    OUT["bg"] = {"acked": len(bg.acked), "uncertain": len(bg.uncertain), "errors": kinds}
    acked += bg.acked
    ok(m2.noop())
    tokens, _ = by_token(m2)
    check_mailbox(tokens, acked, bg.uncertain, flagged)
    OUT["bg"]["uncertain_stored"] = len([t for t in bg.uncertain if t in tokens])
    ok(surv.noop())
    tokens, _ = by_token(surv)
    check_mailbox(tokens, acked, bg.uncertain, flagged)
    surv.logout()
    ok(m2.uid("STORE", str(tokens["during-0"][0][0]), "+FLAGS", r"(\Answered)"))
    m2.logout()
    step("restart")
    # The restarted node serves everything, including what it missed.
    t0 = time.time()
    while True:
        try:
            m3 = imap(victim)
            ok(m3.select("INBOX"))
            tokens, _ = by_token(m3)
            check_mailbox(tokens, acked, bg.uncertain, dict(flagged, **{"during-0": r"\Answered"}))
            m3.logout()
            break
        except (OSError, imaplib.IMAP4.error, AssertionError) as e:
            assert time.time() - t0 < 60, "restarted node: %r" % (e,)
            time.sleep(0.5)
    acc, rep = send(victim, "after-restart", ["alice"], lmtp=True)
    assert acc == ["alice"], rep
    acked.append("after-restart")
    for node in others:
        m = imap(node)
        ok(m.select("INBOX"))
        tokens, _ = by_token(m)
        check_mailbox(tokens, acked, bg.uncertain, flagged)
        m.logout()
    OUT["acked"] = len(acked)


def sc_uids():
    """Concurrent deliveries to one mailbox through all nodes (SMTP and
    LMTP): unique, strictly ascending UIDs; each acknowledged message
    stored exactly once."""
    per, workers = CFG["per"], CFG["workers"]
    acked, failed = [], []
    lock = threading.Lock()

    def worker(w):
        node = w % len(NODES)
        lmtp = (w // len(NODES)) % 2 == 1
        for k in range(per):
            tok = "c-%02d-%03d" % (w, k)
            try:
                acc, rep = send(node, tok, ["carol"], lmtp)
            except (OSError, smtplib.SMTPException) as e:
                acc, rep = [], repr(e)
            with lock:
                (acked if acc == ["carol"] else failed).append((tok, rep))

    ts = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not failed, failed[:5]
    want = sorted(t for t, _ in acked)
    views = []
    for node in range(len(NODES)):
        m = imap(node, "carol")
        data = ok(m.select("INBOX"))
        assert int(data[0]) == len(want), (node, data, len(want))
        st = ok(m.status("INBOX", "(UIDNEXT UIDVALIDITY MESSAGES)"))[0].decode()
        tokens, order = by_token(m)
        m.logout()
        assert order == sorted(order) and len(set(order)) == len(order), ("UIDs not strictly ascending", node, order)
        dup = {t: v for t, v in tokens.items() if len(v) != 1}
        assert not dup, ("stored more than once", node, dup)
        assert sorted(tokens) == want, ("acked vs stored", node, set(want) ^ set(tokens))
        uidnext = int(re.search(r"UIDNEXT (\d+)", st).group(1))
        validity = re.search(r"UIDVALIDITY (\d+)", st).group(1)
        assert uidnext > order[-1], (st, order[-1])
        views.append((validity, order, {t: v[0][0] for t, v in tokens.items()}))
    for v in views[1:]:
        assert v == views[0], "nodes disagree on UIDVALIDITY or UIDs"
    # Per worker, later acks got higher UIDs (each worker waits for its
    # 250 before sending the next).
    uid = views[0][2]
    for w in range(workers):
        seq = [uid["c-%02d-%03d" % (w, k)] for k in range(per)]
        assert seq == sorted(seq), (w, seq)
    OUT.update(messages=len(want), first_uid=views[0][1][0], last_uid=views[0][1][-1])


def sc_refusals():
    n = NODES[0]
    # Open relay: a non-local recipient without authentication.
    s = smtplib.SMTP("127.0.0.1", n["smtp"], timeout=30)
    s.ehlo("client.test")
    assert s.mail("spammer@remote.test")[0] == 250
    code, text = s.rcpt("victim@elsewhere.test")
    OUT["relay"] = [code, text.decode()]
    assert code == 554 and text.startswith(b"5.7.1"), (code, text)
    code, text = s.rcpt("nobody@" + DOMAIN)
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    s.rset()
    # Nothing to send with no accepted recipient.
    try:
        s.sendmail("spammer@remote.test", ["victim@elsewhere.test"], b"Subject: x\r\n\r\nx\r\n")
        raise AssertionError("relay accepted")
    except smtplib.SMTPRecipientsRefused as e:
        assert list(e.recipients.values())[0][0] == 554, e.recipients
    s.quit()
    # Wrong password on submission: 535; and no relay for an unauthenticated session.
    s = smtplib.SMTP("127.0.0.1", NODES[1]["submission"], timeout=30)
    s.ehlo("client.test")
    try:
        s.login(addr("alice"), "wrong-password")
        raise AssertionError("submission AUTH with a wrong password accepted")
    except smtplib.SMTPAuthenticationError as e:
        OUT["smtp_auth"] = [e.smtp_code, e.smtp_error.decode()]
        assert e.smtp_code == 535, (e.smtp_code, e.smtp_error)
    s.close()
    s = smtplib.SMTP("127.0.0.1", NODES[1]["submission"], timeout=30)
    s.ehlo("client.test")
    code, _ = s.mail("alice@" + DOMAIN)
    if code == 250:
        code, _ = s.rcpt("bob@" + DOMAIN)
    assert code >= 500, ("submission without AUTH accepted a transaction", code)
    s.close()
    # The right password works on submission (so the 535 was about the
    # password); authenticated, a remote recipient is accepted for the
    # outbound queue (testing/outbound checks what then happens to it).
    s = smtplib.SMTP("127.0.0.1", NODES[1]["submission"], timeout=30)
    s.ehlo("client.test")
    assert s.login(addr("alice"), CFG["pw"]["alice"])[0] == 235
    assert s.mail(addr("alice"))[0] == 250
    code, text = s.rcpt("someone@elsewhere.test")
    OUT["submission_remote"] = [code, text.decode()]
    assert code == 250, (code, text)
    s.rset()
    s.quit()
    # LMTP is no relay either.
    s = smtplib.LMTP("127.0.0.1", NODES[2]["lmtp"], timeout=30)
    s.ehlo("client.test")
    assert s.mail("sender@remote.test")[0] == 250
    code, text = s.rcpt("victim@elsewhere.test")
    OUT["lmtp_remote"] = [code, text.decode()]
    assert 500 <= code < 600, (code, text)
    s.quit()
    # IMAP: wrong password, another user's password, unknown user: NO.
    for node, user, pw in [(2, "alice", "wrong-password"), (0, "alice", CFG["pw"]["bob"]), (1, "nobody", "x")]:
        m = imaplib.IMAP4("127.0.0.1", NODES[node]["imap"], timeout=30)
        try:
            m.login(addr(user), pw)
            raise AssertionError("IMAP login accepted for %s/%s" % (user, pw))
        except imaplib.IMAP4.error as e:
            OUT.setdefault("imap_login", []).append(str(e))
        m.shutdown()
    # Cross-user: bob cannot reach alice's mailboxes, on any node.
    acc, rep = send(0, "secret-for-alice", ["alice"])
    assert acc == ["alice"], rep
    for node in range(len(NODES)):
        m = imap(node, "bob")
        names = b" ".join(ok(m.list('""', "*")))
        assert b"alice" not in names.lower(), names
        for name in ["alice@%s/INBOX" % DOMAIN, "../alice@%s/INBOX" % DOMAIN, "/alice@%s/INBOX" % DOMAIN,
                     "Other Users/alice@%s/INBOX" % DOMAIN, "~alice/INBOX", "user/alice/INBOX", "#users/alice/INBOX"]:
            typ, data = m.select('"%s"' % name)
            assert typ == "NO", (node, name, typ, data)
            typ, data = m.status('"%s"' % name, "(MESSAGES)")
            assert typ == "NO", (node, name, typ, data)
        ok(m.select("INBOX"))
        assert ok(m.uid("SEARCH", None, "ALL")) == [b""], "bob sees messages"
        typ, _ = m.append('"alice@%s/INBOX"' % DOMAIN, None, None, b"Subject: x\r\n\r\nx\r\n")
        assert typ == "NO", typ
        typ, _ = m.delete('"alice@%s/INBOX"' % DOMAIN)
        assert typ == "NO", typ
        m.logout()
    m = imap(1, "alice")
    ok(m.select("INBOX"))
    tokens, _ = by_token(m)
    assert sorted(tokens) == ["secret-for-alice"], tokens
    m.logout()


def sc_bulk():
    """Delivers CFG["count"] small messages to dave over LMTP with several
    connections through all nodes, each session sending many messages."""
    count, conns = CFG["count"], CFG["conns"]
    failed = []
    lock = threading.Lock()

    def worker(w):
        s = smtplib.LMTP("127.0.0.1", NODES[w % len(NODES)]["lmtp"], timeout=60)
        s.ehlo("client.test")
        for k in range(w, count, conns):
            tok = "bulk-%05d" % k
            raw = message(tok, to="dave").encode()
            try:
                s.sendmail("sender@remote.test", [addr("dave")], raw)
            except smtplib.SMTPException as e:
                with lock:
                    failed.append((tok, repr(e)))
        s.quit()

    ts = [threading.Thread(target=worker, args=(w,)) for w in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not failed, failed[:5]
    OUT["delivered"] = count


def sc_checkdave():
    """The server's view after mbsync pushed changes back: CFG["flagged"]
    has \\Flagged, CFG["deleted"] are gone, the rest are all there."""
    m = imap(CFG["node"], "dave")
    ok(m.select("INBOX"))
    tokens, order = by_token(m)
    want = sorted(set("bulk-%05d" % k for k in range(CFG["count"])) - set(CFG["deleted"]))
    assert sorted(tokens) == want, (len(tokens), len(want), sorted(set(tokens) ^ set(want))[:10])
    for t, v in tokens.items():
        assert len(v) == 1, (t, v)
        if t in CFG["flagged"]:
            assert r"\Flagged" in v[0][1], (t, v)
        else:
            assert r"\Flagged" not in v[0][1], (t, v)
    # What mbsync wrote locally is what the server serves (Maildir files
    # may have LF line ends).
    OUT["compared"] = sorted(CFG.get("local", {}))
    for tok, path in CFG.get("local", {}).items():
        _, got = fetch_token(m, tok)
        with open(path, "rb") as f:
            local = f.read()
        # mbsync adds an X-TUID: header of its own to what it stores.
        local = re.sub(rb"(?m)^X-TUID: [^\r\n]*\r?\n", b"", local, count=1)
        a, b = local.replace(b"\r\n", b"\n"), got.replace(b"\r\n", b"\n")
        i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
        assert a == b, (tok, "local and server copies differ at byte %d" % i, a[max(0, i - 80):i + 80], b[max(0, i - 80):i + 80])
    m.logout()
    OUT["messages"] = len(tokens)


def main():
    globals()["sc_" + sys.argv[1]]()
    sys.stdout.write(json.dumps(OUT) + "\n")


if __name__ == "__main__":
    main()
