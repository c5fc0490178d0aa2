package idleload

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"
)

func TestExistsCount(t *testing.T) {
	for _, tc := range []struct {
		line string
		n    int
		ok   bool
	}{
		{"* 12 EXISTS", 12, true},
		{"* 0 exists", 0, true},
		{"* 3 RECENT", 0, false},
		{"* OK [UIDNEXT 4] Predicted next UID", 0, false},
		{"a1 OK 5 EXISTS", 0, false},
		{"* x EXISTS", 0, false},
	} {
		n, ok := existsCount(tc.line)
		if n != tc.n || ok != tc.ok {
			t.Errorf("existsCount(%q) = %d, %v; want %d, %v", tc.line, n, ok, tc.n, tc.ok)
		}
	}
}

func TestReadLineLiteral(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("* LIST () \"/\" {5}\r\nIN\r\nX\r\n* 2 EXISTS\r\n"), 16)
	for _, want := range []string{"* LIST () \"/\" {5}IN\r\nX", "* 2 EXISTS"} {
		got, err := readLine(br)
		if err != nil || got != want {
			t.Fatalf("readLine = %q, %v; want %q", got, err, want)
		}
	}
	if _, err := readLine(br); err == nil {
		t.Fatal("readLine at EOF: no error")
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	p50, p99, mx := Percentiles(ds)
	if p50 != 51*time.Millisecond || p99 != 100*time.Millisecond || mx != 100*time.Millisecond {
		t.Errorf("Percentiles = %v %v %v", p50, p99, mx)
	}
	if a, b, c := Percentiles(nil); a != 0 || b != 0 || c != 0 {
		t.Errorf("Percentiles(nil) = %v %v %v", a, b, c)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("Percentiles sorted its argument")
	}
}

func TestCPUTime(t *testing.T) {
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Busy until the clock (1/100 s ticks) moves; bounded, as a loaded
	// host may give this process little of a core.
	x := 0
	after := before
	for start := time.Now(); after <= before && time.Since(start) < 20*time.Second; x++ {
		if x%(1<<20) == 0 {
			if after, err = CPUTime(os.Getpid()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if after <= before {
		t.Errorf("CPU time %v after %v of busy loop (%d rounds)", after, before, x)
	}
	if _, err := CPUTime(1 << 30); err == nil {
		t.Error("CPUTime of no process: no error")
	}
}
