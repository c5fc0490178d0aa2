package mailbox

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestParseEncodedSameAsTwoSteps: the delivery's one-encoding path stores
// what EncodeInfo(ParseInfo(msg)) stores, on the part budget's every
// step (full, cut to 64 parts, root only) and the fallback.
func TestParseEncodedSameAsTwoSteps(t *testing.T) {
	many := "Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
		strings.Repeat("--b\r\nContent-Type: text/plain; name=\""+strings.Repeat("n", 200)+"\"\r\n\r\nx\r\n", 999) + "--b--\r\n"
	for name, msg := range map[string]string{
		"plain":     "From: A <a@b.test>\r\nSubject: =?utf-8?q?h=C3=A9?=\r\n\r\nbody\r\n",
		"empty":     "",
		"LF only":   "Subject: x\n\nbody\n",
		"nested":    strings.Repeat("Content-Type: message/rfc822\r\n\r\n", 30) + "x",
		"many":      many,
		"monstrous": "Subject: " + strings.Repeat("s", 200000) + "\r\n\r\nx",
	} {
		want, err := EncodeInfo(ParseInfo([]byte(msg)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseEncoded([]byte(msg))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: parseEncoded %.80q, %v; want %.80q", name, got, err, want)
		}
	}
}

// BenchmarkDeliveryInfo is the per-delivery parsing of a mailbench-like
// 75 KB message: "two-step" as Body did it (normalize line ends, parse,
// encode the info a second time), "once" as it does for an SMTP message
// (the spool normalized it; the size check's JSON is kept).
//
//	go test -run '^$' -bench DeliveryInfo ./mailserver/mailbox/
func BenchmarkDeliveryInfo(b *testing.B) {
	var m strings.Builder
	m.WriteString("Return-Path: <s@example.org>\r\nReceived: from x ([127.0.0.1])\r\n\tby localhost (hastore) with LMTP id 0123456789abcdef;\r\n\tWed, 02 Dec 2026 10:00:00 +0000\r\n")
	m.WriteString("From: Sender 1 <sender1@example.org>\r\nTo: Bench User <bench@bench.test>\r\nSubject: mailbench message 1: the raft leader\r\n")
	m.WriteString("Date: Thu, 01 Jan 2026 00:01:00 +0000\r\nMessage-ID: <1.abc@mailbench.example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
	for m.Len() < 75000 {
		m.WriteString("the cluster replicated mailbox delivery of and a message erasure shard raft\r\n")
	}
	msg := []byte(m.String())
	b.Run("two-step", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		cpu0 := processCPU()
		defer func() { b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op") }()
		for range b.N {
			if _, err := EncodeInfo(ParseInfo(NormalizeCRLF(msg))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("once", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		cpu0 := processCPU()
		defer func() { b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op") }()
		for range b.N {
			if _, err := parseEncoded(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// processCPU is this process's user+system CPU time: on a busy shared
// machine a benchmark's wall time says little, its CPU per operation
// more (reported as cpu-ns/op).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
