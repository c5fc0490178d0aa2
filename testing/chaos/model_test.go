package main

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The mailbox model must accept a correct history and reject the anomalies
// the chaos run is there to catch.
func TestMailboxModel(t *testing.T) {
	op := func(client int, call, ret int64, in pIn, out pOut) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	app := func(c int, call, ret int64, uid uint32) porcupine.Operation {
		return op(c, call, ret, pIn{kind: "append"}, pOut{uid: uid})
	}
	read := func(c int, call, ret int64, e ...entry) porcupine.Operation {
		return op(c, call, ret, pIn{kind: "read"}, pOut{read: encode(e)})
	}
	del := func(c int, call, ret int64, uid uint32) porcupine.Operation {
		return op(c, call, ret, pIn{kind: "store", uid: uid, flag: fDeleted, add: true}, pOut{})
	}
	exp := func(c int, call, ret int64, uid uint32) porcupine.Operation {
		return op(c, call, ret, pIn{kind: "expunge", uid: uid}, pOut{})
	}
	m := mailboxModel.ToModel()
	cases := []struct {
		name string
		ok   bool
		h    []porcupine.Operation
	}{
		{"appends and a read", true, []porcupine.Operation{app(0, 0, 10, 1), app(1, 5, 15, 2), read(2, 20, 30, entry{1, 0}, entry{2, 0})}},
		{"concurrent appends in either order", true, []porcupine.Operation{app(0, 0, 10, 2), app(1, 0, 10, 1), read(2, 20, 30, entry{1, 0}, entry{2, 0})}},
		{"UID reused after expunge", false, []porcupine.Operation{app(0, 0, 1, 1), del(0, 2, 3, 1), exp(0, 4, 5, 1), app(1, 6, 7, 1)}},
		{"UID going down", false, []porcupine.Operation{app(0, 0, 1, 5), app(0, 2, 3, 4)}},
		{"lost append", false, []porcupine.Operation{app(0, 0, 1, 1), read(1, 2, 3)}},
		{"stale read after expunge", false, []porcupine.Operation{app(0, 0, 1, 1), del(0, 2, 3, 1), exp(0, 4, 5, 1), read(1, 6, 7, entry{1, fDeleted})}},
		{"expunge without \\Deleted is a no-op", true, []porcupine.Operation{app(0, 0, 1, 1), exp(0, 2, 3, 1), read(1, 4, 5, entry{1, 0})}},
		{"unknown store may or may not have happened", true, []porcupine.Operation{app(0, 0, 1, 1),
			op(0, 2, 1<<40, pIn{kind: "store", uid: 1, flag: fSeen, add: true}, pOut{unknown: true}), read(1, 4, 5, entry{1, 0}), read(1, 6, 7, entry{1, fSeen})}},
	}
	for _, c := range cases {
		got := porcupine.CheckOperationsTimeout(m, c.h, 10*time.Second)
		if (got == porcupine.Ok) != c.ok {
			t.Errorf("%s: %v, want ok=%v", c.name, got, c.ok)
		}
	}
}

func TestStripAdded(t *testing.T) {
	in := "Return-Path: <a@b>\r\nReceived: from x\r\n\tby y; date\r\nFrom: a@b\r\n\r\nbody\r\n"
	if got := string(stripAdded([]byte(in))); got != "From: a@b\r\n\r\nbody\r\n" {
		t.Errorf("stripAdded: %q", got)
	}
}
