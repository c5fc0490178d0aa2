package outbound

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"hastore/mailserver/mailbox"
)

// Local delivers a message into a local address's mailbox: the way DSNs
// reach the sender. dedup identifies the message, so that delivering it
// twice (a crash between the delivery and its record) stores it once.
type Local interface {
	DeliverLocal(ctx context.Context, addr string, msg []byte, dedup [32]byte) error
}

// MailboxLocal delivers through the mail model, like SMTP does.
type MailboxLocal struct{ Store *mailbox.Store }

// DeliverLocal delivers msg to addr (a user, or an alias of local users).
func (m MailboxLocal) DeliverLocal(ctx context.Context, addr string, msg []byte, dedup [32]byte) error {
	rt, err := m.Store.Resolve(ctx, addr, int64(len(msg)))
	if err != nil {
		return err
	}
	if len(rt.Targets) == 0 {
		return fmt.Errorf("%w: %s has no mailbox that can take it", mailbox.ErrNotFound, addr)
	}
	d := m.Store.NewDelivery()
	for _, t := range rt.Targets {
		if err := d.AddRecipient(mailbox.Recipient{Address: t.User}); err != nil {
			return err
		}
	}
	d.SetRetryKey(dedup, 24*time.Hour)
	if err := d.Body(ctx, msg, time.Time{}); err != nil {
		return err
	}
	outs, err := d.Commit(ctx, false)
	if err != nil {
		d.Abort(ctx)
		return err
	}
	var errs []error
	for _, o := range outs {
		if o.Err == nil {
			return nil
		}
		errs = append(errs, o.Err)
	}
	return errors.Join(errs...)
}

// bounce puts a DSN about failed into e's sender's mailbox.
func (q *Queue) bounce(ctx context.Context, e *Entry, failed []Rcpt) error {
	if e.From == "" {
		return nil // never bounce a bounce (RFC 5321 4.5.5)
	}
	if q.local == nil {
		q.log.Warn("no local delivery for DSNs: bounce only logged", "to", e.From, "queue_id", e.ID)
		return nil
	}
	var head []byte
	if id, err := parseBody(e.Body); err == nil {
		if held, err := q.mem.take(ctx, e.Size); err == nil {
			if body, err := q.rec.c.Get(ctx, id); err == nil {
				head = bytes.Clone(headerOf(withoutReturnPath(body)))
			}
			q.mem.give(held)
		}
	}
	msg := buildDSN(q.cfg.Hostname, q.cfg.Now(), e, failed, head)
	h := sha256.New()
	fmt.Fprintf(h, "hastore dsn\x00%s", e.ID)
	for _, r := range failed {
		fmt.Fprintf(h, "\x00%s", r.Addr)
	}
	var key [32]byte
	h.Sum(key[:0])
	if err := q.local.DeliverLocal(ctx, e.From, msg, key); err != nil {
		if errors.Is(err, mailbox.ErrNotFound) {
			// The sender is gone (user deleted): nobody to tell.
			q.log.Warn("DSN undeliverable: the sender has no mailbox; dropped", "to", e.From, "queue_id", e.ID, "err", err)
			return nil
		}
		return err
	}
	q.log.Info("DSN delivered to the sender", "to", e.From, "queue_id", e.ID, "failed", len(failed))
	return nil
}

// headerOf returns msg's header section (bounded at 64 KiB).
func headerOf(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		msg = msg[:i+2]
	}
	if len(msg) > 64<<10 {
		msg = msg[:64<<10]
	}
	return msg
}

var smtpReplyRE = regexp.MustCompile(`^[245][0-9][0-9][ -]`)

var statusRE = regexp.MustCompile(`\b([245])\.(\d{1,3})\.(\d{1,3})\b`)

// dsnStatus is the RFC 3463 status of a failure reply.
func dsnStatus(reply string) string {
	if m := statusRE.FindString(reply); m != "" {
		if m[0] == '2' {
			return "5.0.0"
		}
		return m
	}
	return "5.0.0"
}

// buildDSN returns an RFC 3464 delivery status notification (a
// multipart/report) about failed, to e's sender.
func buildDSN(hostname string, now time.Time, e *Entry, failed []Rcpt, origHeader []byte) []byte {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	boundary := "dsn-" + hex.EncodeToString(rnd[:])
	date := now.Format(time.RFC1123Z)
	var b strings.Builder
	crlf := func(format string, a ...any) { fmt.Fprintf(&b, format+"\r\n", a...) }
	crlf("Return-Path: <>")
	crlf("From: Mail Delivery System <MAILER-DAEMON@%s>", hostname)
	crlf("To: <%s>", e.From)
	crlf("Subject: Undelivered Mail Returned to Sender")
	crlf("Date: %s", date)
	crlf("Message-ID: <%s.%s@%s>", e.ID, hex.EncodeToString(rnd[:4]), hostname)
	crlf("Auto-Submitted: auto-replied")
	crlf("MIME-Version: 1.0")
	crlf("Content-Type: multipart/report; report-type=delivery-status; boundary=\"%s\"", boundary)
	crlf("")
	crlf("This is a MIME-encapsulated message.")
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: text/plain; charset=utf-8")
	crlf("Content-Description: Notification")
	crlf("")
	crlf("This is the mail system at %s.", hostname)
	crlf("")
	crlf("Your message (queue ID %s) could not be delivered to one or more", e.ID)
	crlf("recipients. It has not been delivered to them and will not be retried.")
	crlf("")
	for _, r := range failed {
		crlf("<%s>: %s", r.Addr, oneLine(r.Reply))
		if r.Remote != "" {
			crlf("    (reported by %s)", oneLine(r.Remote))
		}
	}
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: message/delivery-status")
	crlf("Content-Description: Delivery report")
	crlf("")
	crlf("Reporting-MTA: dns; %s", hostname)
	crlf("X-Hastore-Queue-ID: %s", e.ID)
	crlf("Arrival-Date: %s", time.Unix(0, e.Created).Format(time.RFC1123Z))
	for _, r := range failed {
		crlf("")
		crlf("Final-Recipient: rfc822; %s", r.Addr)
		crlf("Original-Recipient: rfc822; %s", r.Addr)
		crlf("Action: failed")
		crlf("Status: %s", dsnStatus(r.Reply))
		if host, _, ok := strings.Cut(r.Remote, " "); ok && host != "" {
			crlf("Remote-MTA: dns; %s", host)
		}
		if reply := afterColon(r.Reply); r.Remote != "" && smtpReplyRE.MatchString(reply) {
			crlf("Diagnostic-Code: smtp; %s", oneLine(reply))
		} else {
			crlf("Diagnostic-Code: x-hastore; %s", oneLine(r.Reply))
		}
		crlf("Last-Attempt-Date: %s", date)
	}
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: text/rfc822-headers")
	crlf("Content-Description: Undelivered message headers")
	crlf("")
	sc := bufio.NewScanner(bytes.NewReader(origHeader))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		crlf("%s", strings.TrimRight(sc.Text(), "\r"))
	}
	crlf("")
	crlf("--%s--", boundary)
	return []byte(b.String())
}

// afterColon drops our "after RCPT TO:" prefix from a reply.
func afterColon(reply string) string {
	if strings.HasPrefix(reply, "after ") {
		if _, rest, ok := strings.Cut(reply, ": "); ok {
			return rest
		}
	}
	return reply
}

func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 900 {
		s = s[:900]
	}
	return s
}
