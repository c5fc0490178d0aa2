#!/usr/bin/env python3
"""Drives an SMTP, submission or LMTP session with Python's smtplib and
prints what the server answered, as JSON, for mailserver's tests.

Input (JSON on stdin):
  {"host": "127.0.0.1", "port": 2525, "lmtp": false, "starttls": false,
   "auth": ["user", "password"] or null,
   "messages": [{"from": "a@b", "to": ["c@d"], "data": "...", "options": ["SIZE=10"]}]}
Output (JSON on stdout):
  {"ehlo": [code, text], "auth": [code, text] or null,
   "messages": [{"mail": [code, text], "rcpt": [[code, text], ...], "data": [[code, text], ...]}]}
"data" has one reply per accepted recipient for LMTP, one otherwise; it is
empty when no recipient was accepted.
"""
import json
import smtplib
import ssl
import sys


def reply(r):
    code, text = r
    return [code, text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)]


def main():
    spec = json.load(sys.stdin)
    out = {"auth": None, "messages": []}
    cls = smtplib.LMTP if spec.get("lmtp") else smtplib.SMTP
    s = cls(spec["host"], spec["port"], timeout=60)
    out["ehlo"] = reply(s.ehlo("client.test"))
    if spec.get("starttls"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s.starttls(context=ctx)
        s.ehlo("client.test")
    out["features"] = sorted(s.esmtp_features.keys())
    if spec.get("auth"):
        user, pw = spec["auth"]
        try:
            out["auth"] = reply(s.login(user, pw))
        except smtplib.SMTPAuthenticationError as e:
            out["auth"] = [e.smtp_code, e.smtp_error.decode("utf-8", "replace")]
        except smtplib.SMTPNotSupportedError as e:
            out["auth"] = [0, "not supported: " + str(e)]
        except smtplib.SMTPException as e:
            out["auth"] = [getattr(e, "smtp_code", 0), str(e)]
    for m in spec.get("messages") or []:
        res = {"rcpt": [], "data": []}
        res["mail"] = reply(s.mail(m["from"], m.get("options", [])))
        accepted = 0
        if res["mail"][0] == 250:
            for to in m["to"]:
                r = reply(s.rcpt(to))
                res["rcpt"].append(r)
                if r[0] // 100 == 2:
                    accepted += 1
        if accepted:
            s.putcmd("data")
            code, text = s.getreply()
            if code != 354:
                res["data"].append(reply((code, text)))
            else:
                q = smtplib._quote_periods(smtplib._fix_eols(m["data"]).encode("utf-8"))
                if not q.endswith(b"\r\n"):
                    q += b"\r\n"
                s.send(q + b".\r\n")
                for _ in range(accepted if spec.get("lmtp") else 1):
                    res["data"].append(reply(s.getreply()))
        else:
            s.rset()
        out["messages"].append(res)
    try:
        s.quit()
    except smtplib.SMTPException:
        pass
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
