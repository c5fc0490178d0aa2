package metrics

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// The mail frontends log every login and every delivery, with its result,
// as one line each. Counting those lines, rather than adding counters
// beside them, keeps the metrics and the log from ever disagreeing and
// keeps the frontends free of metrics code.
var (
	// Logins counts login attempts by protocol, result ("ok", "bad
	// password", "unknown user", "disabled", "throttled", "temporary
	// failure") and method ("cache", "hash", "-").
	Logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hastore_logins_total",
		Help: "Mail logins (IMAP, submission) by protocol, result and method (cache: answered by the login cache; hash: argon2id computed).",
	}, []string{"proto", "result", "method"})
	// Deliveries counts SMTP/LMTP/submission messages by mode and result
	// ("stored": the 250 was sent; "tempfail": storing or committing
	// failed, the client retries).
	Deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hastore_mail_deliveries_total",
		Help: "Messages received over SMTP, submission or LMTP by mode and result (stored; tempfail: the sender was told to retry).",
	}, []string{"mode", "result"})
	// DeliveredRecipients counts mailboxes a stored message went into.
	DeliveredRecipients = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hastore_mail_delivered_recipients_total",
		Help: "Mailbox deliveries of stored messages (a message to three local users counts three).",
	}, []string{"mode"})
)

func init() {
	Registry.MustRegister(Logins, Deliveries, DeliveredRecipients)
	for _, m := range []string{"smtp", "submission", "lmtp"} {
		Deliveries.WithLabelValues(m, "stored")
		Deliveries.WithLabelValues(m, "tempfail")
	}
}

// deliveryFailures are the messages of the SMTP session's log lines for a
// message it received but could not store (the client got a 4xx).
var deliveryFailures = map[string]bool{
	"storing a message failed":                       true,
	"committing a delivery failed":                   true,
	"no memory to store a message in time":           true,
	"receiving a message failed":                     true,
	"too many messages in progress from one network": true,
	"spool full: refusing a message":                 true,
}

// label values are bounded: a value outside the known set counts as
// "other", so a client cannot grow the series by what it sends.
var (
	knownProto  = map[string]bool{"imap": true, "submission": true, "smtp": true, "lmtp": true}
	knownResult = map[string]bool{"ok": true, "bad password": true, "unknown user": true, "disabled": true, "throttled": true, "temporary failure": true}
	knownMethod = map[string]bool{"cache": true, "hash": true, "-": true}
)

func bounded(v string, known map[string]bool) string {
	if known[v] {
		return v
	}
	return "other"
}

// CountLogs wraps h so that the login and delivery lines passing through
// it are counted. Everything is passed on to h unchanged.
func CountLogs(h slog.Handler) slog.Handler { return &countingHandler{next: h} }

type countingHandler struct {
	next slog.Handler
	// mode is the "mode" attribute given by With (the SMTP listeners'
	// loggers carry it).
	mode string
}

func (c *countingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Login lines are Info or Warn; counting must not depend on the log
	// level, so Info is always let through to Handle.
	return l >= slog.LevelInfo || c.next.Enabled(ctx, l)
}

func (c *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case r.Message == "login":
		var proto, result, method string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "proto":
				proto = a.Value.String()
			case "result":
				result = a.Value.String()
			case "method":
				method = a.Value.String()
			}
			return true
		})
		Logins.WithLabelValues(bounded(proto, knownProto), bounded(result, knownResult), bounded(method, knownMethod)).Inc()
	case r.Message == "delivered" && c.mode != "":
		var n int64
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "delivered" {
				n = a.Value.Int64()
			}
			return true
		})
		mode := bounded(c.mode, knownProto)
		Deliveries.WithLabelValues(mode, "stored").Inc()
		DeliveredRecipients.WithLabelValues(mode).Add(float64(n))
	case deliveryFailures[r.Message] && c.mode != "":
		Deliveries.WithLabelValues(bounded(c.mode, knownProto), "tempfail").Inc()
	}
	if !c.next.Enabled(ctx, r.Level) {
		return nil
	}
	return c.next.Handle(ctx, r)
}

func (c *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	d := &countingHandler{next: c.next.WithAttrs(attrs), mode: c.mode}
	for _, a := range attrs {
		if a.Key == "mode" {
			d.mode = a.Value.String()
		}
	}
	return d
}

func (c *countingHandler) WithGroup(name string) slog.Handler {
	return &countingHandler{next: c.next.WithGroup(name), mode: c.mode}
}
