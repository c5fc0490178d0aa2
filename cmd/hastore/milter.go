package main

import (
	"flag"
	"fmt"
	"time"

	"hastore/mailserver"
	"hastore/mailserver/smtp"
)

// milterFlags put content filters (rspamd …) in front of delivery.
type milterFlags struct {
	addrs      listFlag
	timeout    time.Duration
	onError    string
	junkHeader string
	junkValue  string
	submission bool
}

func (f *milterFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.addrs, "milter", "content filter speaking the milter protocol (rspamd's proxy worker, …), as tcp:host:port or unix:/path, asked before mail received on the SMTP and LMTP ports is accepted; "+
		"give it several times for several filters, asked in order")
	fs.DurationVar(&f.timeout, "milter-timeout", 30*time.Second, "how long one milter may take over one message; past it --milter-on-error decides")
	fs.StringVar(&f.onError, "milter-on-error", "tempfail", "when a milter cannot be asked (down, too slow): tempfail (451, the sender retries; nothing passes unfiltered) or accept (deliver unfiltered, logged)")
	fs.StringVar(&f.junkHeader, "milter-junk-header", "", "a header which, when a milter adds or changes it to --milter-junk-value, files the message into the recipient's Junk mailbox instead of INBOX (rspamd: X-Spam); a milter's quarantine does the same")
	fs.StringVar(&f.junkValue, "milter-junk-value", "Yes", "value of --milter-junk-header meaning spam (compared ignoring case; \"Yes, score=…\" matches Yes)")
	fs.BoolVar(&f.submission, "milter-submission", false, "ask the milters about submitted mail too (the authenticated user is passed as {auth_authen})")
}

func (f *milterFlags) apply(cfg *mailserver.Config) error {
	if len(f.addrs) == 0 {
		return nil
	}
	for _, a := range f.addrs {
		if _, _, err := smtp.ParseMilterAddr(a); err != nil {
			return fmt.Errorf("--milter: %w", err)
		}
	}
	onErr, err := smtp.ParseMilterOnError(f.onError)
	if err != nil {
		return fmt.Errorf("--milter-on-error: %w", err)
	}
	if f.timeout <= 0 {
		return fmt.Errorf("--milter-timeout %s: want a positive duration such as 30s", f.timeout)
	}
	cfg.SMTPTuning.Milter = &smtp.MilterConfig{Addrs: f.addrs, Timeout: f.timeout, OnError: onErr,
		JunkHeader: f.junkHeader, JunkValue: f.junkValue, Submission: f.submission}
	return nil
}
