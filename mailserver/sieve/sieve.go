package sieve

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"
)

// Limits bound what one script may cost. The zero value of a field means
// its default.
type Limits struct {
	MaxScriptBytes int // default 64 KiB
	MaxNesting     int // blocks and tests inside one another; default 32
	MaxRedirects   int // redirect actions per message; default 4
	MaxActions     int // actions per message, implicit keep aside; default 64
	// MaxMatchSteps bounds the comparison work of one run (about one step
	// per character compared); default 20 million, some tens of ms.
	MaxMatchSteps int64
	// MaxFlags bounds the IMAP flags and keywords one set may hold;
	// default 64.
	MaxFlags int
	// MaxBodyBytes is how much of a body the "body" test reads; the rest
	// is not searched. Default 1 MiB.
	MaxBodyBytes int
	// Vacation :days is clamped to [MinVacationDays, MaxVacationDays] as
	// RFC 5230 §4.1 allows; defaults 1 and 60.
	MinVacationDays, MaxVacationDays int
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxScriptBytes, 64<<10)
	def(&l.MaxNesting, 32)
	def(&l.MaxRedirects, 4)
	def(&l.MaxActions, 64)
	if l.MaxMatchSteps <= 0 {
		l.MaxMatchSteps = 20_000_000
	}
	def(&l.MaxFlags, 64)
	def(&l.MaxBodyBytes, 1<<20)
	def(&l.MinVacationDays, 1)
	def(&l.MaxVacationDays, 60)
	return l
}

// Script is a parsed and checked Sieve script, safe for concurrent use.
type Script struct {
	cmds     []*node
	required map[string]bool
	limits   Limits
}

// Parse reads and checks a script. A *ParseError says where and what is
// wrong; it is worth showing to the script's author as is.
func Parse(src []byte, lim Limits) (*Script, error) {
	lim = lim.withDefaults()
	if len(src) > lim.MaxScriptBytes {
		return nil, &ParseError{Pos: Pos{1, 1}, Msg: fmt.Sprintf("script is %d bytes; the limit is %d", len(src), lim.MaxScriptBytes)}
	}
	if !utf8.Valid(src) {
		bad := 0
		for bad < len(src) {
			r, size := utf8.DecodeRune(src[bad:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			bad += size
		}
		l := newLexer(string(src))
		l.advance(bad)
		return nil, &ParseError{Pos: l.pos(), Msg: "script is not valid UTF-8 here; save it as UTF-8"}
	}
	raw, err := parseScript(string(src), lim.MaxNesting)
	if err != nil {
		return nil, err
	}
	cmds, req, err := compileScript(raw)
	if err != nil {
		return nil, err
	}
	return &Script{cmds: cmds, required: req, limits: lim}, nil
}

// Requires lists the extensions the script declared with "require", in
// Capabilities order: a caller can, say, skip loading vacation memory for
// scripts that do not use "vacation".
func (s *Script) Requires() []string {
	var out []string
	for _, c := range Capabilities {
		if s.required[c] {
			out = append(out, c)
		}
	}
	return out
}

// Envelope is the SMTP envelope of the delivery being filtered.
type Envelope struct {
	// From is the reverse path (MAIL FROM) without angle brackets; "" for
	// the null reverse path <>.
	From string
	// To is the recipient (RCPT TO) this delivery is for: the script
	// owner's address as the sender wrote it.
	To string
}

// Message is what the interpreter reads of the message being delivered.
type Message interface {
	// Header returns the raw values (text after "name:", folded or not) of
	// every header field of the top-level header named name, compared
	// case-insensitively, in message order; nil if there is none.
	Header(name string) []string
	// Size is the message size in octets as RFC 5228 §5.9 means it.
	Size() int64
}

// VacationMemory is the caller's record of vacation replies sent
// (RFC 5230 §4.2). The interpreter only asks; the caller records a key
// (for the Vacation action's Period) once the reply is queued.
type VacationMemory interface {
	// Replied reports whether a reply under key was sent within the
	// period of that reply.
	Replied(ctx context.Context, key string) (bool, error)
}

// Input is one message delivered to one script owner.
type Input struct {
	Envelope Envelope
	Message  Message
	// Vacation may be nil when the script owner cannot use vacation; a
	// vacation command then never replies.
	Vacation VacationMemory
	// Addresses are the owner's own addresses besides Envelope.To
	// (aliases): vacation replies only to mail sent to one of them and
	// never to one of them (RFC 5230 §4.5).
	Addresses []string
}

// Action is one thing the script asks the caller to do. Its concrete
// types are Keep, FileInto, Redirect, Discard, Reject and Vacation.
type Action interface{ action() }

// Keep stores the message in the owner's default mailbox (INBOX).
type Keep struct {
	Flags    []string // IMAP flags and keywords to set (RFC 5232)
	Implicit bool     // no action cancelled the implicit keep (RFC 5228 §2.10.2)
}

// FileInto stores the message in Mailbox (RFC 5228 §4.1). Copy only
// records that :copy was given; it changes nothing the caller does, as
// FileInto never cancels anything by itself in this list.
type FileInto struct {
	Mailbox string
	Flags   []string
	Copy    bool
}

// Redirect sends the message unchanged to Address (RFC 5228 §4.2) with
// the original envelope sender.
type Redirect struct {
	Address string
	Copy    bool
}

// Discard records that the script discarded the message (RFC 5228 §4.5):
// nothing is to be stored unless another action says so.
type Discard struct{}

// Reject refuses the message with Reason (RFC 5429): at the protocol level
// when the caller still can (LMTP/SMTP 550), else with a DSN to the
// envelope sender unless it is null. Extended is true for "ereject", which
// MUST be refused at the protocol level where possible.
type Reject struct {
	Reason   string
	Extended bool
}

// Vacation is an auto-reply to send (RFC 5230). The interpreter already
// applied every "do not reply" rule and asked the VacationMemory; the
// caller builds the reply, queues it with a null envelope sender, then
// records Key for Period.
type Vacation struct {
	To        string // the envelope sender being answered
	From      string // From: of the reply (":from", else the recipient)
	Subject   string // already defaulted to "Auto: <original subject>"
	Reason    string // body text, or a MIME entity when MIME is true
	MIME      bool   // Reason is a MIME part with its own headers
	Key       string // once-per-sender-per-Period key
	Period    time.Duration
	InReplyTo string   // Message-ID of the message answered, if any
	Refs      []string // References: for the reply
}

func (Keep) action()     {}
func (FileInto) action() {}
func (Redirect) action() {}
func (Discard) action()  {}
func (Reject) action()   {}
func (Vacation) action() {}

// RuntimeError is a failure while running a script (a limit reached, or
// two actions that cannot go together). Execute then returns an implicit
// keep, as RFC 5228 §2.10.6 requires, alongside the error.
type RuntimeError struct {
	Pos Pos
	Msg string
}

func (e *RuntimeError) Error() string {
	return fmt.Sprintf("sieve: at %d:%d: %s", e.Pos.Line, e.Pos.Col, e.Msg)
}
