package mailstate

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"hastore/replica/meta"
)

// TestGoldenLogReplays replays testdata/golden_v1.txt, a raft log of every
// mail command (valid, failing, in batches, in a repeated Request,
// truncated, with a trailing byte, of an unknown type) encoded by the
// release that kept the mail commands inside replica/meta, with the results
// and the final state that release produced. The log must decode to
// commands that encode back to the same bytes, apply to byte-identical
// results, and leave byte-identical state: existing logs, snapshots and
// request memories open unchanged.
func TestGoldenLogReplays(t *testing.T) {
	fh, err := os.Open("testdata/golden_v1.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var (
		logs      []*raft.Log
		wantRes   [][]byte
		wantState []string
	)
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		kind, val, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "cmd":
			b, err := hex.DecodeString(val)
			if err != nil {
				t.Fatal(err)
			}
			logs = append(logs, entry(uint64(len(logs)+1), b))
		case "res":
			b, err := hex.DecodeString(val)
			if err != nil {
				t.Fatal(err)
			}
			wantRes = append(wantRes, b)
		case "kv":
			wantState = append(wantState, val)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(logs) < 50 || len(wantRes) != len(logs) || len(wantState) == 0 {
		t.Fatalf("golden file: %d entries, %d results, %d records", len(logs), len(wantRes), len(wantState))
	}

	// Every entry that decoded before decodes now and encodes back to the
	// same bytes; the malformed ones still fail.
	decoded := 0
	for _, l := range logs {
		cmd, err := meta.DecodeCommand(l.Data, CommandSet())
		if err != nil {
			continue
		}
		decoded++
		b, err := meta.EncodeCommand(cmd)
		if err != nil || !bytes.Equal(b, l.Data) {
			t.Fatalf("entry %d (%T): re-encoded %x (%v), logged %x", l.Index, cmd, b, err, l.Data)
		}
	}
	if decoded != len(logs)-4 {
		t.Fatalf("%d of %d entries decode, want all but the 4 malformed ones", decoded, len(logs))
	}

	f := openTestFSM(t, t.TempDir(), nil)
	for i, r := range results(f.ApplyBatch(logs)) {
		if got := meta.EncodeResult(r); !bytes.Equal(got, wantRes[i]) {
			old, _ := meta.DecodeResult(wantRes[i])
			t.Errorf("entry %d: result differs\n got %+v\nwant %+v", i+1, r, old)
		}
	}
	equalDumps(t, "state after the golden log", wantState, dump(t, f, true))

	// Without the mail set the same log is refused entry by entry with
	// StatusInvalid, deterministically, never applied differently.
	g, err := meta.OpenFSM(t.TempDir(), meta.FSMOptions{Logger: testLogger(t), Badger: smallBadger})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for i, r := range results(g.ApplyBatch(logs)) {
		cmd, _ := meta.DecodeCommand(logs[i].Data, CommandSet())
		if _, isMail := cmd.(mailCommand); isMail && (r.Status != meta.StatusInvalid || !strings.Contains(r.Message, "unknown command type")) {
			t.Errorf("entry %d without the mail set: %v %q, want invalid, unknown type", i+1, r.Status, r.Message)
		}
	}
}
