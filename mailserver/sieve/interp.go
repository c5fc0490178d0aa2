package sieve

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"time"
)

type run struct {
	ctx   context.Context
	s     *Script
	in    Input
	flags []string // the imap4flags internal variable

	actions     []Action
	cancelKeep  bool
	redirects   int
	rejected    bool
	delivering  bool // keep, fileinto or redirect ran
	vacationRan bool
	stopped     bool
	matchBudget int64 // steps of comparison left (Limits.MaxMatchSteps)
	// Decoded header values and the addresses in them, by header name,
	// so many tests of one header parse it once.
	decoded   map[string][]string
	addresses map[string][][]string
	// The body taken apart, once, at the first body test.
	bodyRead     bool
	body         *bodyParts // nil: no body, or not read yet
	headerDecode mime.WordDecoder
}

// Execute runs the script on one message. It returns the actions in the
// order the script asked for them, with duplicates merged and the implicit
// keep added as RFC 5228 §2.10.2 says. On a *RuntimeError (or a cancelled
// ctx) the actions are a single implicit Keep and the error says why; the
// caller delivers the message and logs the error for the script's owner.
func (s *Script) Execute(ctx context.Context, in Input) ([]Action, error) {
	r := &run{ctx: ctx, s: s, in: in, matchBudget: s.limits.MaxMatchSteps}
	if err := r.block(s.cmds); err != nil {
		return []Action{Keep{Implicit: true}}, err
	}
	if !r.cancelKeep {
		r.addKeep(Keep{Flags: r.flags, Implicit: true})
	}
	return r.actions, nil
}

func (r *run) fail(n *node, format string, args ...any) error {
	return &RuntimeError{Pos: n.pos, Msg: fmt.Sprintf(format, args...)}
}

func (r *run) block(cmds []*node) error {
	for _, n := range cmds {
		if r.stopped {
			return nil
		}
		if err := r.ctx.Err(); err != nil {
			return fmt.Errorf("sieve: script stopped: %w", err)
		}
		if err := r.command(n); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) command(n *node) error {
	switch n.name {
	case "if":
		ok, err := r.test(n.tests[0])
		if err != nil {
			return err
		}
		if ok {
			return r.block(n.block)
		}
		for _, e := range n.chain {
			if e.name == "else" {
				return r.block(e.block)
			}
			ok, err := r.test(e.tests[0])
			if err != nil {
				return err
			}
			if ok {
				return r.block(e.block)
			}
		}
		return nil
	case "stop":
		r.stopped = true
		return nil
	case "keep":
		if err := r.deliveryAllowed(n); err != nil {
			return err
		}
		r.cancelKeep = true
		flags, err := r.flagsFor(n)
		if err != nil {
			return err
		}
		return r.add(n, Keep{Flags: flags})
	case "discard":
		r.cancelKeep = true
		return r.add(n, Discard{})
	case "fileinto":
		if err := r.deliveryAllowed(n); err != nil {
			return err
		}
		_, cp := n.tags["copy"]
		if !cp {
			r.cancelKeep = true
		}
		flags, err := r.flagsFor(n)
		if err != nil {
			return err
		}
		if strings.EqualFold(n.args[0].strs[0], "INBOX") {
			// fileinto "INBOX" is keep (RFC 5228 §4.3); one copy, not two.
			return r.add(n, Keep{Flags: flags})
		}
		return r.add(n, FileInto{Mailbox: n.args[0].strs[0], Flags: flags, Copy: cp})
	case "redirect":
		if err := r.deliveryAllowed(n); err != nil {
			return err
		}
		addr, _ := parseRedirect(n.args[0].strs[0])
		_, cp := n.tags["copy"]
		if !cp {
			r.cancelKeep = true
		}
		for _, a := range r.actions {
			if rd, ok := a.(Redirect); ok && strings.EqualFold(rd.Address, addr) {
				return nil // RFC 5228 §2.10.3: the same redirect twice is one
			}
		}
		r.redirects++
		if r.redirects > r.s.limits.MaxRedirects {
			return r.fail(n, "more than %d redirects for one message", r.s.limits.MaxRedirects)
		}
		return r.add(n, Redirect{Address: addr, Copy: cp})
	case "reject", "ereject":
		if r.rejected {
			return r.fail(n, "the message is already rejected; only one reject or ereject may run (RFC 5429 §2.3)")
		}
		if r.vacationRan {
			return r.fail(n, "reject cannot run with vacation (RFC 5429 §2.3)")
		}
		if r.delivering {
			return r.fail(n, "reject cannot run after keep, fileinto or redirect: a message is either delivered or refused (RFC 5429 §2.3)")
		}
		r.rejected = true
		r.cancelKeep = true
		return r.add(n, Reject{Reason: n.args[0].strs[0], Extended: n.name == "ereject"})
	case "setflag", "addflag":
		base := r.flags
		if n.name == "setflag" {
			base = nil
		}
		flags, err := r.union(n, base, n.args[0].strs)
		if err != nil {
			return err
		}
		r.flags = flags
	case "removeflag":
		r.flags = removeFlags(r.flags, n.args[0].strs)
	case "vacation":
		return r.vacation(n)
	}
	return nil
}

func (r *run) deliveryAllowed(n *node) error {
	if r.rejected {
		return r.fail(n, "%s cannot run after reject: a message is either delivered or refused (RFC 5429 §2.3)", n.name)
	}
	r.delivering = true
	return nil
}

func (r *run) add(n *node, a Action) error {
	// Merge duplicates (RFC 5228 §2.10.3): the same mailbox once, with the
	// union of the flags asked for.
	for i, old := range r.actions {
		switch o := old.(type) {
		case Keep:
			if k, ok := a.(Keep); ok {
				flags, err := r.union(n, o.Flags, k.Flags)
				if err != nil {
					return err
				}
				o.Flags = flags
				o.Implicit = o.Implicit && k.Implicit
				r.actions[i] = o
				return nil
			}
		case FileInto:
			if f, ok := a.(FileInto); ok && o.Mailbox == f.Mailbox {
				flags, err := r.union(n, o.Flags, f.Flags)
				if err != nil {
					return err
				}
				o.Flags = flags
				o.Copy = o.Copy && f.Copy
				r.actions[i] = o
				return nil
			}
		case Discard:
			if _, ok := a.(Discard); ok {
				return nil
			}
		}
	}
	if len(r.actions) >= r.s.limits.MaxActions {
		return r.fail(n, "more than %d actions for one message", r.s.limits.MaxActions)
	}
	r.actions = append(r.actions, a)
	return nil
}

func (r *run) addKeep(k Keep) {
	for i, old := range r.actions {
		if o, ok := old.(Keep); ok {
			// Both sets are within MaxFlags already.
			o.Flags, _ = addFlags(o.Flags, k.Flags, -1)
			r.actions[i] = o
			return
		}
	}
	r.actions = append(r.actions, k)
}

func (r *run) flagsFor(n *node) ([]string, error) {
	if a, ok := n.tags["flags"]; ok {
		return r.union(n, nil, a.strs)
	}
	return append([]string(nil), r.flags...), nil
}

// union is addFlags within Limits.MaxFlags, which keeps flag work linear.
func (r *run) union(n *node, set, lists []string) ([]string, error) {
	out, ok := addFlags(set, lists, r.s.limits.MaxFlags)
	if !ok {
		return nil, r.fail(n, "more than %d IMAP flags for one message", r.s.limits.MaxFlags)
	}
	return out, nil
}

// addFlags adds the space-separated flags of each string to set, dropping
// case-insensitive duplicates (RFC 5232 §3). ok is false if the result
// would hold more than max flags (max < 0: no limit).
func addFlags(set []string, lists []string, max int) (out []string, ok bool) {
	out = append([]string(nil), set...)
	for _, l := range lists {
	next:
		for _, f := range strings.Fields(l) {
			for _, have := range out {
				if strings.EqualFold(have, f) {
					continue next
				}
			}
			if max >= 0 && len(out) >= max {
				return nil, false
			}
			out = append(out, f)
		}
	}
	return out, true
}

func removeFlags(set []string, lists []string) []string {
	var drop []string
	for _, l := range lists {
		drop = append(drop, strings.Fields(l)...)
	}
	var out []string
next:
	for _, f := range set {
		for _, d := range drop {
			if strings.EqualFold(f, d) {
				continue next
			}
		}
		out = append(out, f)
	}
	return out
}

func (r *run) test(n *node) (bool, error) {
	ok, err := false, error(nil)
	if !r.exhausted() {
		ok, err = r.test1(n)
	}
	if err == nil && r.exhausted() {
		err = r.fail(n, "the script compared more than %d characters for one message; simplify its :matches keys", r.s.limits.MaxMatchSteps)
	}
	return ok, err
}

func (r *run) test1(n *node) (bool, error) {
	switch n.name {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "not":
		ok, err := r.test(n.tests[0])
		return !ok, err
	case "allof", "anyof":
		want := n.name == "anyof"
		for _, t := range n.tests {
			ok, err := r.test(t)
			if err != nil || ok == want {
				return want, err // short-circuit (RFC 5228 §5.2, §5.3)
			}
		}
		return !want, nil
	case "size":
		if a, ok := n.tags["over"]; ok {
			return r.in.Message.Size() > a.num, nil
		}
		return r.in.Message.Size() < n.tags["under"].num, nil
	case "exists":
		for _, h := range n.args[0].strs {
			if len(r.in.Message.Header(h)) == 0 {
				return false, nil
			}
		}
		return true, nil
	case "header":
		for _, h := range n.args[0].strs {
			for _, v := range r.header(h) {
				if r.anyKey(n, v, n.args[1].strs) {
					return true, nil
				}
				if r.exhausted() {
					return false, nil
				}
			}
		}
		return false, nil
	case "address":
		for _, h := range n.args[0].strs {
			for _, addrs := range r.headerAddrs(h) {
				if r.exhausted() {
					return false, nil
				}
				for _, addr := range addrs {
					if part, ok := addressPart(addr, n.addrPart); ok && r.anyKey(n, part, n.args[1].strs) {
						return true, nil
					}
				}
			}
		}
		return false, nil
	case "envelope":
		for _, p := range n.args[0].strs {
			var addr string
			if strings.EqualFold(p, "from") {
				addr = r.in.Envelope.From
			} else {
				addr = r.in.Envelope.To
			}
			addr = dropSourceRoute(addr)
			part, ok := addr, true
			if addr != "" { // the null reverse path matches as "" whatever the part (§5.4)
				part, ok = addressPart(addr, n.addrPart)
			}
			if ok && r.anyKey(n, part, n.args[1].strs) {
				return true, nil
			}
		}
		return false, nil
	case "body":
		values, ok := r.bodyValues(n)
		if !ok {
			return false, nil
		}
		for _, v := range values {
			if r.anyKey(n, v, n.args[0].strs) {
				return true, nil
			}
		}
		return false, nil
	case "hasflag":
		var keys []string
		for _, k := range n.args[0].strs {
			keys = append(keys, strings.Fields(k)...)
		}
		for _, f := range r.flags {
			if r.anyKey(n, f, keys) {
				return true, nil
			}
		}
		return false, nil
	}
	return false, r.fail(n, "test %q is not implemented", n.name)
}

func (r *run) anyKey(n *node, value string, keys []string) bool {
	if r.exhausted() {
		return false
	}
	mv := newMatchValue(n.comparator, value)
	for _, k := range keys {
		if mv.match(n.match, k, &r.matchBudget) {
			return true
		}
		if r.exhausted() {
			return false
		}
	}
	return false
}

// exhausted reports that the comparison budget is spent: every loop over
// values or keys ends at once, and test() turns it into a RuntimeError.
func (r *run) exhausted() bool { return r.matchBudget == -2 }

// header returns the decoded values of a header, decoding once per run.
func (r *run) header(name string) []string {
	key := strings.ToLower(name)
	if v, ok := r.decoded[key]; ok {
		return v
	}
	var out []string
	for _, v := range r.in.Message.Header(name) {
		out = append(out, r.decodeHeader(v))
	}
	if r.decoded == nil {
		r.decoded = map[string][]string{}
	}
	r.decoded[key] = out
	return out
}

// headerAddrs returns the addresses of each value of a header, parsing
// once per run.
func (r *run) headerAddrs(name string) [][]string {
	key := strings.ToLower(name)
	if a, ok := r.addresses[key]; ok {
		return a
	}
	var out [][]string
	for _, v := range r.header(name) {
		out = append(out, headerAddresses(v))
	}
	if r.addresses == nil {
		r.addresses = map[string][][]string{}
	}
	r.addresses[key] = out
	return out
}

// decodeHeader unfolds a raw value, decodes RFC 2047 words (RFC 5228 §2.7.2
// requires it) and trims surrounding white space.
func (r *run) decodeHeader(v string) string {
	if !spend(&r.matchBudget, int64(len(v))) { // reading values is comparison work too
		return ""
	}
	v = strings.NewReplacer("\r\n", "", "\n", "").Replace(v)
	if strings.Contains(v, "=?") {
		if d, err := r.headerDecode.DecodeHeader(v); err == nil {
			v = d
		}
	}
	return strings.TrimSpace(v)
}

// dropSourceRoute turns "@a,@b:user@c" into "user@c" (RFC 5228 §5.4).
func dropSourceRoute(addr string) string {
	if strings.HasPrefix(addr, "@") {
		if i := strings.IndexByte(addr, ':'); i >= 0 {
			return addr[i+1:]
		}
	}
	return addr
}

// headerAddresses finds the addr-specs in an address header. A value the
// strict parser refuses is still read leniently, one address per comma,
// so a malformed header does not blind the filter.
func headerAddresses(v string) []string {
	if list, err := mail.ParseAddressList(v); err == nil {
		out := make([]string, len(list))
		for i, a := range list {
			out[i] = a.Address
		}
		return out
	}
	var out []string
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if i := strings.LastIndexByte(part, '<'); i >= 0 {
			part = strings.TrimSuffix(part[i+1:], ">")
		}
		if part != "" {
			out = append(out, part)
		}
	}
	return out
}

// addressPart cuts an address as :all, :localpart, :domain, :user or
// :detail asks (RFC 5228 §2.7.4, RFC 5233 with "+" as separator). ok is
// false for :detail of an address without a detail.
func addressPart(addr, part string) (string, bool) {
	local, domain := addr, ""
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain = addr[:i], addr[i+1:]
	}
	switch part {
	case "localpart":
		return local, true
	case "domain":
		return domain, true
	case "user":
		if i := strings.IndexByte(local, '+'); i >= 0 {
			return local[:i], true
		}
		return local, true
	case "detail":
		if i := strings.IndexByte(local, '+'); i >= 0 {
			return local[i+1:], true
		}
		return "", false
	}
	return addr, true
}

func (r *run) vacation(n *node) error {
	if r.vacationRan {
		return r.fail(n, "vacation may run only once per message (RFC 5230 §4)")
	}
	if r.rejected {
		return r.fail(n, "vacation cannot run with reject (RFC 5429 §2.3)")
	}
	r.vacationRan = true
	lim := r.s.limits
	var period time.Duration
	if a, ok := n.tags["seconds"]; ok {
		period = time.Duration(a.num) * time.Second
		if period < time.Second {
			period = 0 // RFC 6131: :seconds 0 replies every time
		}
		if max := time.Duration(lim.MaxVacationDays) * 24 * time.Hour; period > max {
			period = max
		}
	} else {
		days := int64(7)
		if a, ok := n.tags["days"]; ok {
			days = a.num
		}
		days = min(max(days, int64(lim.MinVacationDays)), int64(lim.MaxVacationDays))
		period = time.Duration(days) * 24 * time.Hour
	}
	sender := r.in.Envelope.From
	var mine []string
	for _, a := range append([]string{r.in.Envelope.To}, r.in.Addresses...) {
		if a != "" {
			mine = append(mine, a)
		}
	}
	if a, ok := n.tags["addresses"]; ok {
		mine = append(mine, a.strs...)
	}
	if !r.shouldReply(sender, mine) || r.in.Vacation == nil {
		return nil
	}
	reason := n.args[0].strs[0]
	subjectArg, _ := n.str("subject")
	fromArg, _ := n.str("from")
	_, isMIME := n.tags["mime"]
	handle, ok := n.str("handle")
	if !ok {
		// RFC 5230 §4.2: without :handle, the reply's own text identifies it.
		handle = strings.Join([]string{reason, subjectArg, fromArg, fmt.Sprint(isMIME)}, "\x00")
	}
	sum := sha256.Sum256([]byte(strings.ToLower(sender) + "\x00" + handle))
	key := "vacation:" + hex.EncodeToString(sum[:])
	replied, err := r.in.Vacation.Replied(r.ctx, key)
	if err != nil {
		return fmt.Errorf("sieve: vacation memory: %w", err)
	}
	if replied {
		return nil
	}
	subject := subjectArg
	if subject == "" {
		orig := ""
		if v := r.in.Message.Header("Subject"); len(v) > 0 {
			orig = r.decodeHeader(v[0])
		}
		subject = "Auto: " + orig
	}
	from := fromArg
	if from == "" {
		from = r.in.Envelope.To
	}
	v := Vacation{To: sender, From: from, Subject: subject, Reason: reason, MIME: isMIME,
		Key: key, Period: period}
	if id := r.in.Message.Header("Message-ID"); len(id) > 0 {
		v.InReplyTo = strings.TrimSpace(r.decodeHeader(id[0]))
		if refs := r.in.Message.Header("References"); len(refs) > 0 {
			v.Refs = strings.Fields(r.decodeHeader(refs[0]))
		}
		v.Refs = append(v.Refs, v.InReplyTo)
	}
	return r.add(n, v)
}

// shouldReply applies RFC 5230 §4.5 and §5 (with RFC 3834): never answer
// the null sender, oneself, lists, or automated mail, and only mail
// addressed to the owner.
func (r *run) shouldReply(sender string, mine []string) bool {
	if sender == "" {
		return false
	}
	for _, m := range mine {
		if strings.EqualFold(sender, m) {
			return false
		}
	}
	local, _ := addressPart(sender, "localpart")
	local = strings.ToLower(local)
	if local == "mailer-daemon" || local == "listserv" || local == "majordomo" ||
		strings.HasPrefix(local, "owner-") || strings.HasSuffix(local, "-request") {
		return false
	}
	msg := r.in.Message
	for _, v := range msg.Header("Auto-Submitted") {
		if !strings.EqualFold(strings.TrimSpace(strings.SplitN(v, ";", 2)[0]), "no") {
			return false
		}
	}
	for _, v := range msg.Header("Precedence") {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "bulk", "list", "junk":
			return false
		}
	}
	for _, h := range []string{"List-Id", "List-Unsubscribe", "List-Post", "List-Help"} {
		if len(msg.Header(h)) > 0 {
			return false
		}
	}
	for _, h := range []string{"To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"} {
		for _, v := range msg.Header(h) {
			for _, a := range headerAddresses(r.decodeHeader(v)) {
				for _, m := range mine {
					if strings.EqualFold(a, m) {
						return true
					}
				}
			}
		}
	}
	return false
}
