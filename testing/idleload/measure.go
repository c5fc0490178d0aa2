package idleload

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Percentiles returns p50, p99 and max of ds (zeros when empty).
func Percentiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

// FormatP formats p50/p99/max of ds, or "-" when empty.
func FormatP(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	a, b, c := Percentiles(ds)
	return fmt.Sprintf("%v / %v / %v", Round(a), Round(b), Round(c))
}

// Round rounds d to a precision that suits its size.
func Round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	default:
		return d.Round(100 * time.Microsecond)
	}
}

// RSS returns the resident set size of process pid in bytes, from
// /proc/PID/status (VmRSS).
func RSS(pid int) (int64, error) { return procStatus(pid, "VmRSS:") }

// PeakRSS returns the largest resident set size process pid has had
// (VmHWM): it catches a peak between two samples.
func PeakRSS(pid int) (int64, error) { return procStatus(pid, "VmHWM:") }

func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// MemAvailable returns the host's MemAvailable (/proc/meminfo) in bytes,
// or 0 if unknown.
func MemAvailable() int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// LoadAvg returns the 1-minute load average.
func LoadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// Runnable returns the number of runnable processes on the host now (from
// /proc/loadavg): taken before a benchmark starts its own, the noise its
// figures carry on a shared machine.
func Runnable() int {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0
	}
	run, _, _ := strings.Cut(f[3], "/")
	n, _ := strconv.Atoi(run)
	return n
}

// StartHogs starts n busy-loop processes (each wants a whole CPU), to put
// the cluster under the load average a busy shared host has; stop ends
// them. They die with us (Pdeathsig) however we end.
func StartHogs(n int) (stop func(), err error) {
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Wait()
		}
		cmds = nil
	}
	for range n {
		c := exec.Command("sh", "-c", "while :; do :; done")
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			stop()
			return nil, fmt.Errorf("cpu hog: %w", err)
		}
		cmds = append(cmds, c)
	}
	return stop, nil
}

// MB formats bytes as MiB.
func MB(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// CPUTime returns the user+system CPU time process pid has used so far,
// from /proc/PID/stat (clock ticks of 1/100 s, as on every Linux the
// benchmarks run on).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields counted
	// here start after its closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // utime, field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64) // stime, field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}
