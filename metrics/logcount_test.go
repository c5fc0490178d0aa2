package metrics

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func TestCountLogs(t *testing.T) {
	var buf bytes.Buffer
	// The handler passes WARN and up only: counting must not depend on it.
	log := slog.New(CountLogs(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	smtpLog := log.With("component", "smtp", "mode", "lmtp")

	ok := Logins.WithLabelValues("imap", "ok", "hash")
	other := Logins.WithLabelValues("other", "other", "other")
	stored := Deliveries.WithLabelValues("lmtp", "stored")
	tempfail := Deliveries.WithLabelValues("lmtp", "tempfail")
	rcpts := DeliveredRecipients.WithLabelValues("lmtp")
	before := []float64{value(ok), value(other), value(stored), value(tempfail), value(rcpts)}

	log.Info("login", "proto", "imap", "user", "a@b.test", "result", "ok", "method", "hash")
	// Values outside the known sets (a client cannot grow the series).
	log.Info("login", "proto", "gopher", "result", "made up", "method", "guess")
	smtpLog.Info("delivered", "recipients", 3, "delivered", 3)
	smtpLog.Warn("storing a message failed", "err", "no quorum")
	log.Info("delivered", "delivered", 1) // not from an SMTP listener: not counted

	after := []float64{value(ok), value(other), value(stored), value(tempfail), value(rcpts)}
	want := []float64{1, 1, 1, 1, 3}
	for i := range want {
		if d := after[i] - before[i]; d != want[i] {
			t.Errorf("counter %d moved by %v, want %v", i, d, want[i])
		}
	}
	if out := buf.String(); strings.Contains(out, "msg=login") || !strings.Contains(out, "storing a message failed") || !strings.Contains(out, "mode=lmtp") {
		t.Errorf("the wrapped handler's level or attributes were not kept:\n%s", out)
	}
}
