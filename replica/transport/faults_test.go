package transport

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestFaults cuts node a off from node b with a's Faults and heals it,
// checking gRPC and Raft each way through.
func TestFaults(t *testing.T) {
	faults := new(Faults)
	aCfg := Config{Key: testKey, Faults: faults}
	a := startNode(t, "a", aCfg, newFakeStore())
	b := startNode(t, "b", Config{Key: testKey}, newFakeStore())
	ta := raftTransport(t, a)
	raftTransport(t, b)
	nc, err := newPool(t, aCfg).Node(b.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)

	works := func() error {
		if _, err := nc.Info(ctx); err != nil {
			return err
		}
		_, err := appendEntries(ta, b, 1)
		return err
	}
	if err := works(); err != nil {
		t.Fatalf("before the cut: %v", err)
	}

	faults.Block(b.addr)
	if got := faults.BlockedAddrs(); len(got) != 1 || got[0] != b.addr {
		t.Errorf("BlockedAddrs = %v", got)
	}
	start := time.Now()
	// The first call may still find the connection Block just closed
	// ("use of closed network connection"); either way it is Unavailable.
	// Once gRPC has seen the close, the redial is refused by the fault.
	if _, err := nc.Info(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Info while blocked = %v, want ErrUnavailable", err)
	}
	if _, err := nc.Info(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "fault injection") {
		t.Errorf("Info while blocked, again = %v, want ErrUnavailable from fault injection", err)
	}
	// The pooled Raft connection was open: Block must have cut it.
	if _, err := appendEntries(ta, b, 1); err == nil {
		t.Errorf("AppendEntries while blocked succeeded")
	}
	if _, err := a.mux.Raft().Dial(raft.ServerAddress(b.addr), time.Second); err == nil || !strings.Contains(err.Error(), "fault injection") {
		t.Errorf("raft Dial while blocked = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("blocked calls took %v to fail; they should fail at once", d)
	}
	faults.mu.Lock()
	open := len(faults.conns[b.addr])
	faults.mu.Unlock()
	if open != 0 {
		t.Errorf("%d connections to %s survived Block", open, b.addr)
	}

	// b is not blocked from a's side: a reaches itself, and b reaches a.
	self, err := newPool(t, aCfg).Node(a.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := self.Info(ctx); err != nil {
		t.Errorf("Info to an unblocked peer: %v", err)
	}

	faults.Unblock(b.addr)
	// Unblock resets the pool's back-off, so this should be quick; poll
	// rather than sleep.
	deadline := time.Now().Add(5 * time.Second)
	for err = works(); err != nil && time.Now().Before(deadline); err = works() {
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after Unblock: %v", err)
	}

	var none *Faults
	if none.Blocked(b.addr) || none.BlockedAddrs() != nil {
		t.Error("nil *Faults blocks something")
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		content string // "" with noFile means no file at all
		noFile  bool
		mode    os.FileMode // 0 means 0600
		want    string
		wantErr string
	}{
		{name: "ok", content: "0123456789abcdef", want: "0123456789abcdef"},
		{name: "trailing newline", content: "  0123456789abcdefXYZ\n", want: "0123456789abcdefXYZ"},
		{name: "too short", content: "0123456789abcde\n", wantErr: "15 bytes, need at least 16"},
		{name: "only white space", content: " \n\t\n", wantErr: "0 bytes"},
		{name: "missing", noFile: true, wantErr: "no such file"},
		{name: "group readable", content: "0123456789abcdef", mode: 0o640, wantErr: "mode 0640, so users other than its owner can read or change it"},
		{name: "world readable", content: "0123456789abcdef", mode: 0o644, wantErr: "chmod 600"},
		{name: "group writable", content: "0123456789abcdef", mode: 0o620, wantErr: "mode 0620"},
		{name: "owner read only", content: "0123456789abcdef", mode: 0o400, want: "0123456789abcdef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if !tc.noFile {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
				if tc.mode != 0 {
					if err := os.Chmod(path, tc.mode); err != nil { // past the umask
						t.Fatal(err)
					}
				}
			}
			key, err := LoadKey(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadKey = %q, %v; want error containing %q", key, err, tc.wantErr)
				}
				return
			}
			if err != nil || string(key) != tc.want {
				t.Fatalf("LoadKey = %q, %v; want %q", key, err, tc.want)
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	k1, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := GenerateKey()
	if string(k1) == string(k2) {
		t.Fatal("two generated keys are equal")
	}
	// What keygen writes, LoadKey must read back unchanged.
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, append(k1, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadKey(path)
	if err != nil || string(got) != string(k1) {
		t.Fatalf("LoadKey(GenerateKey()) = %q, %v; want %q", got, err, k1)
	}
	if _, err := NewPool(Config{Key: []byte("short")}); err == nil {
		t.Error("NewPool accepted a short key")
	}
}
