package smtp

import (
	"strings"

	gosmtp "github.com/emersion/go-smtp"

	"hastore/mailserver/mailbox"
)

// sieveEnvelope is what the recipients' Sieve scripts see of this
// transaction, and the queue their redirects and replies go through.
func (s *session) sieveEnvelope() mailbox.SieveEnvelope {
	env := mailbox.SieveEnvelope{From: s.from, MsgID: s.msgID, To: map[string]string{}}
	if s.srv.cfg.Outbound != nil {
		env.Outbound = s.srv.cfg.Outbound
	}
	for _, r := range s.rcpts {
		for _, t := range r.targets {
			if _, ok := env.To[t.User]; !ok {
				env.To[t.User] = r.addr
			}
		}
	}
	return env
}

// sieveReply is the answer for a recipient whose script rejected the
// message (RFC 5429 §2.1: 550 5.7.1 with the script's reason).
func sieveReply(e *mailbox.SieveRejectError) error {
	reason := sanitize(strings.Join(strings.Fields(e.Reason), " "))
	reason = strings.Map(func(r rune) rune {
		if r > 0x7e {
			return '?'
		}
		return r
	}, reason)
	if reason == "" {
		reason = "Message rejected by the recipient's filter"
	}
	return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: reason}
}

// anyStored reports whether some outcome is a success.
func anyStored(outs []mailbox.Outcome) bool {
	for _, o := range outs {
		if o.Err == nil {
			return true
		}
	}
	return false
}
