package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkResult is what one wrk process reported.
type wrkResult struct {
	reqs      int64   // requests completed
	reqPerSec float64 // Requests/sec
	bytesSec  float64 // Transfer/sec, bytes (headers included)
	latAvg    time.Duration
	p50, p99  time.Duration
	errors    string  // socket errors / non-2xx, "" if none
	cpu       float64 // CPU seconds wrk itself used
	raw       string
}

// runWrk runs one wrk process against url with the given Host header and
// parses its report.
func runWrk(ctx context.Context, wrkBin, url, host string, threads, conns int, d time.Duration) (*wrkResult, error) {
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second)),
		"--latency", "--timeout", "10s"}
	if host != "" {
		args = append(args, "-H", "Host: "+host)
	}
	args = append(args, url)
	cmd := exec.CommandContext(ctx, wrkBin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("wrk %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	r, err := parseWrk(out.String())
	if err != nil {
		return nil, fmt.Errorf("wrk %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	if ps := cmd.ProcessState; ps != nil {
		r.cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	return r, nil
}

var (
	reReqSec   = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	reTransfer = regexp.MustCompile(`(?m)^Transfer/sec:\s+([0-9.]+)([KMGT]?B)`)
	reLatency  = regexp.MustCompile(`(?m)^\s+Latency\s+([0-9.]+[a-z]+)`)
	reDist     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+[a-z]+)`)
	reTotal    = regexp.MustCompile(`(?m)^\s+(\d+) requests in`)
	reSockErr  = regexp.MustCompile(`(?m)^\s+Socket errors:.*$`)
	reNon2xx   = regexp.MustCompile(`(?m)^\s+Non-2xx or 3xx responses:\s+(\d+)`)
)

func parseWrk(s string) (*wrkResult, error) {
	r := &wrkResult{raw: s}
	m := reReqSec.FindStringSubmatch(s)
	if m == nil {
		return nil, fmt.Errorf("no Requests/sec in wrk's output")
	}
	r.reqPerSec, _ = strconv.ParseFloat(m[1], 64)
	if m = reTransfer.FindStringSubmatch(s); m == nil {
		return nil, fmt.Errorf("no Transfer/sec in wrk's output")
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	mult := map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[m[2]]
	r.bytesSec = v * mult
	if m = reTotal.FindStringSubmatch(s); m != nil {
		r.reqs, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m = reLatency.FindStringSubmatch(s); m != nil {
		r.latAvg = parseWrkDur(m[1])
	}
	for _, m := range reDist.FindAllStringSubmatch(s, -1) {
		if m[1] == "50" {
			r.p50 = parseWrkDur(m[2])
		} else {
			r.p99 = parseWrkDur(m[2])
		}
	}
	var errs []string
	if m := reSockErr.FindString(s); m != "" {
		errs = append(errs, strings.TrimSpace(m))
	}
	if m := reNon2xx.FindStringSubmatch(s); m != nil {
		errs = append(errs, "non-2xx/3xx: "+m[1])
	}
	r.errors = strings.Join(errs, "; ")
	return r, nil
}

// parseWrkDur parses wrk's durations: 1.23us, 4.56ms, 1.20s, 2.00m, 1.00h.
func parseWrkDur(s string) time.Duration {
	i := strings.IndexFunc(s, func(c rune) bool { return c >= 'a' && c <= 'z' })
	if i < 0 {
		return 0
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0
	}
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[s[i:]]
	return time.Duration(v * float64(unit))
}

// merge combines the reports of wrk processes that ran side by side: rates
// add up; the mean latency is weighted by requests, p50 too (an
// approximation), and p99 is the worst of them.
func merge(rs []*wrkResult) *wrkResult {
	if len(rs) == 1 {
		return rs[0]
	}
	out := &wrkResult{}
	var errs []string
	var wsum float64
	for _, r := range rs {
		out.reqs += r.reqs
		out.reqPerSec += r.reqPerSec
		out.bytesSec += r.bytesSec
		out.cpu += r.cpu
		w := float64(r.reqs)
		wsum += w
		out.latAvg += time.Duration(w * float64(r.latAvg))
		out.p50 += time.Duration(w * float64(r.p50))
		out.p99 = max(out.p99, r.p99)
		if r.errors != "" {
			errs = append(errs, r.errors)
		}
		out.raw += r.raw
	}
	if wsum > 0 {
		out.latAvg = time.Duration(float64(out.latAvg) / wsum)
		out.p50 = time.Duration(float64(out.p50) / wsum)
	}
	out.errors = strings.Join(errs, " | ")
	return out
}
