package meta

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestRaftLogLevels(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a := newHCLog(l, "raft").(*hclogAdapter)
	now := time.Unix(1000, 0)
	a.rl.now = func() time.Time { return now }

	tests := []struct {
		level hclog.Level
		msg   string
		want  string // the level shown at INFO, "" if not shown
	}{
		{hclog.Error, "failed to heartbeat to", ""},
		{hclog.Error, "failed to appendEntries to", ""},
		{hclog.Error, "failed to make requestVote RPC", ""},
		{hclog.Warn, "failed to contact", ""},
		{hclog.Error, "failed to decode incoming command", ""},
		{hclog.Error, "failed to persist vote", "ERROR"}, // this node's own state: stays
		{hclog.Error, "failed to send snapshot to", "WARN"},
		{hclog.Info, "entering leader state", "INFO"},
		{hclog.Warn, "heartbeat timeout reached, starting election", "WARN"},
		{hclog.Warn, "heartbeat timeout reached, starting election", ""}, // a repeat within the window
		{hclog.Warn, "heartbeat timeout reached, starting election", ""},
	}
	for _, tt := range tests {
		buf.Reset()
		a.Log(tt.level, tt.msg, "target", "n2")
		got := buf.String()
		switch {
		case tt.want == "" && got != "":
			t.Errorf("%v %q: logged at INFO: %s", tt.level, tt.msg, got)
		case tt.want != "" && !strings.Contains(got, "level="+tt.want):
			t.Errorf("%v %q: got %q, want level %s", tt.level, tt.msg, got, tt.want)
		}
	}
	now = now.Add(time.Minute)
	buf.Reset()
	a.Warn("heartbeat timeout reached, starting election")
	if got := buf.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "repeats_held_back=2") {
		t.Errorf("after the window: %q, want WARN with repeats_held_back=2", got)
	}

	// At DEBUG the re-levelled lines are all there.
	buf.Reset()
	d := newHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft")
	d.Error("failed to heartbeat to", "peer", "n2")
	if got := buf.String(); !strings.Contains(got, "level=DEBUG") || !strings.Contains(got, "peer=n2") {
		t.Errorf("at DEBUG: %q", got)
	}
}
