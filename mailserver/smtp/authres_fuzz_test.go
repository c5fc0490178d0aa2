package smtp

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzWithAuthResults: whatever header a sender writes, the stored message
// is the trace fields, our field, the sender's fields minus the
// Authentication-Results in our name, and the body unchanged.
func FuzzWithAuthResults(f *testing.F) {
	for _, s := range []string{
		"From: a@b\r\nSubject: x\r\n\r\nbody\r\n",
		"Authentication-Results: mx.test; dmarc=pass\r\nFrom: a@b\r\n\r\nbody",
		"authentication-results:  MX.TEST (1); spf=pass\r\n\tdkim=pass\r\nX: y\r\n\r\n",
		"Authentication-Results: other.test; spf=pass\r\n\r\nAuthentication-Results: mx.test; in the body\r\n",
		"Authentication-Results: mx.test\n continued\nFrom: a\n\nbare LF body\n",
		"no header at all",
		"",
		"Authentication-Results: mx.testing; spf=pass\r\n\r\n",
	} {
		f.Add(s)
	}
	const trace = "Return-Path: <a@b>\r\nReceived: from x by mx.test;\r\n\tdate\r\n"
	const field = "Authentication-Results: mx.test; spf=none\r\n"
	f.Fuzz(func(t *testing.T, data string) {
		msg := []byte(trace + data)
		out := withAuthResults(msg, len(trace), "mx.test", field)
		if !bytes.HasPrefix(out, []byte(trace+field)) {
			t.Fatalf("output does not start with the trace and our field: %q", out)
		}
		hdr := headerOf([]byte(data))
		body := []byte(data)[len(hdr):]
		if !bytes.HasSuffix(out, body) {
			t.Fatalf("body changed: %q → %q", body, out)
		}
		kept := out[len(trace)+len(field) : len(out)-len(body)]
		if len(kept) > len(hdr) {
			t.Fatalf("header grew: %q → %q", hdr, kept)
		}
		// No field of ours is left among the sender's.
		for _, line := range strings.Split(string(kept), "\n") {
			if forgedAuthResults([]byte(line), "mx.test") {
				t.Fatalf("forged field kept: %q in %q", line, kept)
			}
		}
		// Every field that is not ours is kept, in order.
		if !strings.Contains(data, "uthentication") && !strings.Contains(strings.ToLower(data), "authentication-results") && !bytes.Equal(kept, hdr) {
			t.Fatalf("header changed without any Authentication-Results: %q → %q", hdr, kept)
		}
	})
}
