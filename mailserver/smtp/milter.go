package smtp

// The milter hook: a content filter (rspamd, SpamAssassin's spamass-milter,
// ClamAV's clamav-milter …) judges each received message before the 250.
// Sendmail's milter protocol is spoken with github.com/emersion/go-milter
// as the client, at the end of DATA: the whole conversation (connect,
// HELO, MAIL, RCPT, headers, body in chunks, end) happens then, on one
// connection per message and milter, under one deadline.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-milter"
	gosmtp "github.com/emersion/go-smtp"
)

// MilterOnError is what a message gets when a milter cannot be asked
// (unreachable, timed out, protocol error).
type MilterOnError int

const (
	// MilterTempFail answers 451 4.7.1: the client retries later, and no
	// message passes unfiltered.
	MilterTempFail MilterOnError = iota
	// MilterAccept delivers as if that milter had accepted (logged).
	MilterAccept
)

// ParseMilterOnError reads "tempfail" or "accept".
func ParseMilterOnError(s string) (MilterOnError, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tempfail", "":
		return MilterTempFail, nil
	case "accept":
		return MilterAccept, nil
	}
	return 0, fmt.Errorf("milter on-error %q: want tempfail or accept", s)
}

// MilterConfig puts content filters in front of delivery (Config.Milter).
type MilterConfig struct {
	// Addrs are the milters, asked in order, each seeing the message as
	// the ones before changed it: "tcp:host:port" or "unix:/path"
	// (ParseMilterAddr).
	Addrs []string
	// Timeout bounds the conversation with one milter for one message
	// (default 30 s); past it OnError decides.
	Timeout time.Duration
	OnError MilterOnError
	// JunkHeader names a header which, added or changed by a milter with a
	// value starting with JunkValue (default "Yes", ignoring case), files
	// the message into each recipient's Junk mailbox instead of INBOX
	// (rspamd's "add header" action adds X-Spam: Yes). The same header
	// already in the message as received counts for nothing: only a
	// milter's say does. A milter's quarantine request files into Junk as
	// well.
	JunkHeader string
	JunkValue  string
	// Submission filters submitted mail too (MX and LMTP always are).
	Submission bool
}

// ParseMilterAddr splits "tcp:host:port" or "unix:/path" into a network
// and address for net.Dial; "host:port" alone is TCP.
func ParseMilterAddr(s string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		if p := strings.TrimPrefix(s, "unix:"); p != "" {
			return "unix", p, nil
		}
	case strings.HasPrefix(s, "inet:"), strings.HasPrefix(s, "tcp:"):
		_, a, _ := strings.Cut(s, ":")
		if _, _, err := net.SplitHostPort(a); err == nil {
			return "tcp", a, nil
		}
	default:
		if _, _, err := net.SplitHostPort(s); err == nil {
			return "tcp", s, nil
		}
	}
	return "", "", fmt.Errorf("milter address %q: want tcp:host:port or unix:/path", s)
}

// maxMilterRead bounds what one milter may send back for one message
// (header changes; body replacement is not offered).
const maxMilterRead = 16 << 20

// milterVerdict is what the milters said about a message.
type milterVerdict struct {
	reply   error  // nil: deliver; else the reply (reject or tempfail)
	discard bool   // answer 250, store nothing
	junk    bool   // into Junk instead of INBOX
	msg     []byte // the message as the milters changed it
	why     string // for the log
	failed  bool   // a milter could not be asked (OnError decided)
}

// milterEnv is the envelope and connection shown to the milter.
type milterEnv struct {
	hostname string // ours
	helo     string
	remote   net.Addr
	from     string
	rcpts    []string
	queueID  string
	user     string // authenticated (submission), for {auth_authen}
}

// check runs msg through every milter in order.
func (m *MilterConfig) check(ctx context.Context, env milterEnv, msg []byte) milterVerdict {
	v := milterVerdict{msg: msg}
	for _, addr := range m.Addrs {
		out, err := m.one(ctx, addr, env, v.msg)
		if err != nil {
			v.failed = true
			if m.OnError == MilterAccept {
				v.why = "milter " + addr + " failed, passed unfiltered: " + err.Error()
				continue
			}
			v.reply = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Content filter unavailable, try again later"}
			v.why = "milter " + addr + " failed: " + err.Error()
			return v
		}
		v.msg = out.msg
		v.junk = v.junk || out.junk
		if out.why != "" {
			v.why = out.why
		}
		if out.reply != nil || out.discard {
			v.reply, v.discard = out.reply, out.discard
			return v
		}
	}
	return v
}

// one asks one milter; an error means it could not give a verdict.
func (m *MilterConfig) one(ctx context.Context, addr string, env milterEnv, msg []byte) (milterVerdict, error) {
	network, a, err := ParseMilterAddr(addr)
	if err != nil {
		return milterVerdict{}, err
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// go-milter sets no deadline of its own with zero timeouts: the
	// dialer's connection carries one for the whole conversation.
	c := milter.NewClientWithOptions(network, a, milter.ClientOptions{
		Dialer:     deadlineDialer{deadline},
		ActionMask: milter.OptAddHeader | milter.OptChangeHeader | milter.OptQuarantine,
	})
	s, err := c.Session()
	if err != nil {
		return milterVerdict{}, err
	}
	defer s.Close()
	return m.converse(s, env, msg)
}

type deadlineDialer struct{ deadline time.Time }

func (d deadlineDialer) Dial(network, addr string) (net.Conn, error) {
	nd := net.Dialer{Deadline: d.deadline}
	c, err := nd.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(d.deadline)
	return &limitedConn{Conn: c, left: maxMilterRead}, nil
}

// limitedConn fails reads past a total, so that a broken milter cannot
// make us buffer without end.
type limitedConn struct {
	net.Conn
	left int64
}

var errMilterTooMuch = errors.New("milter sent more than " + strconv.Itoa(maxMilterRead) + " bytes for one message")

func (c *limitedConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errMilterTooMuch
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= int64(n)
	return n, err
}

// converse is one message's milter conversation.
func (m *MilterConfig) converse(s *milter.ClientSession, env milterEnv, msg []byte) (milterVerdict, error) {
	v := milterVerdict{msg: msg}
	// decided says whether act ends the conversation, and sets v.
	decided := func(stage string, act *milter.Action) bool {
		switch act.Code {
		case milter.ActContinue, milter.ActSkip:
			return false
		case milter.ActAccept:
			v.why = "accepted at " + stage
		case milter.ActDiscard:
			v.discard, v.why = true, "discarded at "+stage
		case milter.ActReject:
			v.reply, v.why = &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Message refused by the content filter"}, "rejected at "+stage
		case milter.ActTempFail:
			v.reply, v.why = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Message deferred by the content filter, try again later"}, "tempfailed at "+stage
		case milter.ActReplyCode:
			v.reply, v.why = milterReply(act.SMTPCode, act.SMTPText), fmt.Sprintf("replied %d at %s", act.SMTPCode, stage)
		default:
			v.reply, v.why = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Content filter unavailable, try again later"}, fmt.Sprintf("unknown action %q at %s", rune(act.Code), stage)
		}
		return true
	}
	fam, port, ip := milter.FamilyUnknown, uint16(0), ""
	if t, ok := env.remote.(*net.TCPAddr); ok {
		fam, port, ip = milter.FamilyInet, uint16(t.Port), t.IP.String()
		if t.IP.To4() == nil {
			fam = milter.FamilyInet6
		}
	}
	if err := s.Macros(milter.CodeConn, "j", env.hostname, "{daemon_name}", "hastore", "{client_addr}", ip); err != nil {
		return v, err
	}
	act, err := s.Conn(env.helo, fam, port, ip)
	if err != nil || decided("connect", act) {
		return v, err
	}
	if act, err = s.Helo(env.helo); err != nil || decided("HELO", act) {
		return v, err
	}
	mailMacros := []string{"i", env.queueID}
	if env.user != "" {
		mailMacros = append(mailMacros, "{auth_authen}", env.user)
	}
	if err := s.Macros(milter.CodeMail, mailMacros...); err != nil {
		return v, err
	}
	if act, err = s.Mail(env.from, nil); err != nil || decided("MAIL", act) {
		return v, err
	}
	for _, r := range env.rcpts {
		if err := s.Macros(milter.CodeRcpt, "{rcpt_addr}", r); err != nil {
			return v, err
		}
		if act, err = s.Rcpt(r, nil); err != nil || decided("RCPT", act) {
			return v, err
		}
	}
	fields, body := splitHeader(msg)
	for _, f := range fields {
		if act, err = s.HeaderField(f.name, f.value()); err != nil || decided("header", act) {
			return v, err
		}
	}
	if act, err = s.HeaderEnd(); err != nil || decided("end of header", act) {
		return v, err
	}
	mods, act, err := s.BodyReadFrom(bytes.NewReader(body)) // 64 KiB chunks, then end of message
	if err != nil {
		return v, err
	}
	if decided("end of message", act) && (v.reply != nil || v.discard) {
		return v, nil
	}
	changed := false
	for _, mod := range mods {
		switch mod.Code {
		case milter.ActAddHeader, milter.ActInsertHeader, milter.ActChangeHeader:
			if !validHeaderName(mod.HeaderName) {
				v.why = strings.TrimSpace(v.why + "; ignored a header with an invalid name")
				continue
			}
			if m.JunkHeader != "" && strings.EqualFold(mod.HeaderName, m.JunkHeader) && m.junkValue(mod.HeaderValue) {
				v.junk = true
			}
			fields = editHeader(fields, mod)
			changed = true
		case milter.ActQuarantine:
			v.junk = true
		default:
			// Not offered in the negotiation (body, envelope changes).
			v.why = strings.TrimSpace(v.why + fmt.Sprintf("; ignored modification %q", rune(mod.Code)))
		}
	}
	if changed {
		v.msg = joinHeader(fields, body)
	}
	return v, nil
}

func (m *MilterConfig) junkValue(v string) bool {
	want := m.JunkValue
	if want == "" {
		want = "Yes"
	}
	v = strings.TrimSpace(v)
	if len(v) < len(want) || !strings.EqualFold(v[:len(want)], want) {
		return false
	}
	// "Yes" and "Yes, score=12" count; "Yesterday" does not.
	rest := v[len(want):]
	return rest == "" || !isLetter(rest[0])
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// milterReply is a milter's own reply (SMFIR_REPLYCODE): its code and
// text, with its enhanced code if the text starts with one. A code of the
// wrong class for a refusal becomes 451/550.
func milterReply(code int, text string) *gosmtp.SMTPError {
	text = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, text)
	if len(text) > 400 {
		text = text[:400]
	}
	class := code / 100
	if class != 4 && class != 5 {
		code, class = 550, 5
	}
	enh := gosmtp.EnhancedCode{class, 7, 1}
	if first, rest, ok := strings.Cut(text, " "); ok {
		if p := strings.Split(first, "."); len(p) == 3 {
			a, e1 := strconv.Atoi(p[0])
			b, e2 := strconv.Atoi(p[1])
			c, e3 := strconv.Atoi(p[2])
			if e1 == nil && e2 == nil && e3 == nil && a == class && b < 1000 && c < 1000 {
				enh, text = gosmtp.EnhancedCode{a, b, c}, rest
			}
		}
	}
	if strings.TrimSpace(text) == "" {
		text = "Message refused by the content filter"
	}
	return &gosmtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
}

// headerField is one field of a message's header as received: its name
// and its raw lines (continuations included, line ends kept).
type headerField struct {
	name string
	raw  []byte
}

// value is the field's value as milters expect it: after the colon and
// the space, folded lines joined by LF.
func (f headerField) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte{':'})
	v = bytes.TrimLeft(v, " \t")
	v = bytes.TrimRight(v, "\r\n")
	return strings.ReplaceAll(string(v), "\r\n", "\n")
}

// splitHeader splits msg into its header fields and its body (after the
// empty line). A line that is no field (no colon) ends the header, as in
// net/mail: what follows is sent as body.
func splitHeader(msg []byte) ([]headerField, []byte) {
	var fields []headerField
	rest := msg
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			return fields, rest[len(line):]
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			f := &fields[len(fields)-1]
			f.raw = f.raw[:len(f.raw)+len(line)] // contiguous in msg
			rest = rest[len(line):]
			continue
		}
		name, _, ok := bytes.Cut(trimmed, []byte{':'})
		if !ok || !validHeaderName(string(name)) {
			return fields, rest
		}
		fields = append(fields, headerField{name: string(name), raw: line})
		rest = rest[len(line):]
	}
	return fields, nil
}

func validHeaderName(n string) bool {
	if n == "" || len(n) > 200 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] <= ' ' || n[i] >= 0x7f || n[i] == ':' {
			return false
		}
	}
	return true
}

// newField builds a field from a milter's name and value (folded lines
// separated by LF or CRLF).
func newField(name, value string) headerField {
	value = strings.ReplaceAll(value, "\r\n", "\n")
	value = strings.Map(func(r rune) rune {
		if r == '\r' || r == 0 {
			return -1
		}
		return r
	}, value)
	lines := strings.Split(value, "\n")
	for i := 1; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], " ") && !strings.HasPrefix(lines[i], "\t") {
			lines[i] = "\t" + lines[i] // a new line must be a continuation
		}
	}
	return headerField{name: name, raw: []byte(name + ": " + strings.Join(lines, "\r\n") + "\r\n")}
}

// editHeader applies a milter's header change: add at the end, insert at
// a position (0: first), or change the index-th (1-based) field of that
// name (an empty value deletes it; a missing one is added).
func editHeader(fields []headerField, mod milter.ModifyAction) []headerField {
	switch mod.Code {
	case milter.ActAddHeader:
		return append(fields, newField(mod.HeaderName, mod.HeaderValue))
	case milter.ActInsertHeader:
		i := min(int(mod.HeaderIndex), len(fields))
		return append(fields[:i], append([]headerField{newField(mod.HeaderName, mod.HeaderValue)}, fields[i:]...)...)
	}
	n := 0
	for i, f := range fields {
		if !strings.EqualFold(f.name, mod.HeaderName) {
			continue
		}
		if n++; uint32(n) != mod.HeaderIndex {
			continue
		}
		if mod.HeaderValue == "" {
			return append(fields[:i], fields[i+1:]...)
		}
		fields[i] = newField(mod.HeaderName, mod.HeaderValue)
		return fields
	}
	if mod.HeaderValue == "" {
		return fields
	}
	return append(fields, newField(mod.HeaderName, mod.HeaderValue))
}

func joinHeader(fields []headerField, body []byte) []byte {
	n := len(body) + 2
	for _, f := range fields {
		n += len(f.raw)
	}
	out := make([]byte, 0, n)
	for _, f := range fields {
		out = append(out, f.raw...)
	}
	out = append(out, "\r\n"...)
	return append(out, body...)
}

// milter asks the configured milters about msg and logs what they said.
// A discarded message gets a 250 reply (v.reply) like a delivered one, so
// that its sender cannot tell.
func (s *session) milter(ctx context.Context, m *MilterConfig, rcpts []string, msg []byte) milterVerdict {
	start := time.Now()
	v := m.check(ctx, milterEnv{
		hostname: s.srv.cfg.Hostname,
		helo:     s.conn.Hostname(),
		remote:   s.conn.Conn().RemoteAddr(),
		from:     s.from,
		rcpts:    rcpts,
		queueID:  s.msgID,
		user:     s.user,
	}, msg)
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case v.discard:
		s.srv.log.Info("message discarded by the content filter: answered 250, stored nowhere", "why", v.why, "from", s.from, "recipients", len(rcpts), "msgid", s.msgID, "remote", s.remote, "took", took)
		v.reply = &gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: "OK: " + s.msgID}
	case v.failed && v.reply != nil:
		s.srv.log.Warn("content filter failed: message deferred (451); check the milter, or --milter-on-error accept", "why", v.why, "from", s.from, "msgid", s.msgID, "remote", s.remote, "took", took)
	case v.reply != nil:
		s.srv.log.Info("message refused by the content filter", "why", v.why, "reply", v.reply.Error(), "from", s.from, "recipients", len(rcpts), "msgid", s.msgID, "remote", s.remote, "took", took)
	case v.failed:
		s.srv.log.Warn("content filter failed: message passed unfiltered (--milter-on-error accept)", "why", v.why, "from", s.from, "msgid", s.msgID, "remote", s.remote, "took", took)
	case v.junk:
		s.srv.log.Info("content filter: spam, filed into Junk", "from", s.from, "msgid", s.msgID, "remote", s.remote, "took", took)
	}
	return v
}
