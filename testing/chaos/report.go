package main

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

type protoStats struct {
	Proto        string  `json:"proto"`
	Ops          int     `json:"ops"`
	OK           int     `json:"ok"`
	FailedOver   int     `json:"failed_over"` // succeeded on another node than the first tried
	Availability float64 `json:"availability_pct"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	LongestOutMs float64 `json:"longest_outage_ms"` // one client: first failure to next success
	MaxGapMs     float64 `json:"max_gap_ms"`        // longest stretch with no op of this protocol completing successfully
	FailoverP50  float64 `json:"failover_p50_ms"`   // latency of the ops that succeeded on another node
	FailoverMax  float64 `json:"failover_max_ms"`
}

type report struct {
	Seed          uint64            `json:"seed"`
	Nodes         int               `json:"nodes"`
	Scheme        string            `json:"scheme"`
	LoadSeconds   float64           `json:"load_seconds"`
	FaultCounts   map[string]int    `json:"faults_injected"`
	Faults        []*fault          `json:"faults"`
	NotInjected   map[string]string `json:"fault_kinds_not_injected"`
	Protocols     []protoStats      `json:"protocols"`
	Availability  float64           `json:"availability_pct"`
	Corrupt       int64             `json:"corrupt"`
	CorruptEvents []string          `json:"corrupt_events,omitempty"`
	Verdict       verdict           `json:"verdict"`
	Linearizable  string            `json:"linearizable"`
	HistoryOps    int               `json:"linearizability_history_ops"`
	UncleanReads  int64             `json:"linearizability_reads_left_out"`
	HealSeconds   float64           `json:"final_heal_to_full_redundancy_s"`
	HealErr       string            `json:"final_heal_error,omitempty"`
	Errors        map[string]int    `json:"error_samples"`
	Scrub         string            `json:"final_scrub"`
	PerSecond     map[string][]int  `json:"successful_ops_per_second"`
	BaselineOps   float64           `json:"baseline_ops_per_second"` // median of the seconds away from any fault
	// DarkSeconds: whole seconds of load in which no operation of any
	// protocol succeeded anywhere (time-based unavailability), and per
	// protocol the seconds without one of its own.
	DarkSeconds      int            `json:"seconds_without_any_success"`
	DarkSecondsProto map[string]int `json:"seconds_without_success_by_protocol"`
	t0               time.Time
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(ok, n int) float64 {
	if n == 0 {
		return 100
	}
	return 100 * float64(ok) / float64(n)
}

func (s *state) report(t0, end time.Time, inj *injector, v verdict, lin string, nHist int, skipped map[string]string, seed uint64, heal time.Duration, healErr error) *report {
	r := &report{Seed: seed, Nodes: len(s.c.nodes()), Scheme: s.c.scheme, LoadSeconds: end.Sub(t0).Seconds(),
		FaultCounts: map[string]int{}, NotInjected: skipped, Verdict: v, Linearizable: lin, HistoryOps: nHist, UncleanReads: s.uncleanReads.Load(),
		HealSeconds: heal.Seconds(), Corrupt: s.corrupt.Load(), Errors: map[string]int{}, t0: t0}
	if healErr != nil {
		r.HealErr = healErr.Error()
	}
	inj.mu.Lock()
	r.Faults = inj.faults
	for _, f := range inj.faults {
		r.FaultCounts[f.Kind]++
	}
	inj.mu.Unlock()
	s.msgMu.Lock()
	r.CorruptEvents = append(r.CorruptEvents, s.corruptEv...)
	s.msgMu.Unlock()
	s.rec.mu.Lock()
	ops := append([]op(nil), s.rec.ops...)
	s.rec.mu.Unlock()
	byProto := map[string][]op{}
	total, totalOK := 0, 0
	for _, o := range ops {
		byProto[o.Proto] = append(byProto[o.Proto], o)
		total++
		if o.OK {
			totalOK++
		} else {
			e := o.Err
			if len(e) > 80 {
				e = e[:80]
			}
			r.Errors[o.Proto+": "+e]++
		}
	}
	r.Availability = pct(totalOK, total)
	// Throughput during each fault against the seconds away from faults.
	secs := int(end.Sub(t0).Seconds()) + 1
	r.PerSecond = map[string][]int{}
	all := make([]int, secs)
	for _, o := range ops {
		i := int(o.End.Sub(t0).Seconds())
		if !o.OK || i < 0 || i >= secs {
			continue
		}
		if r.PerSecond[o.Proto] == nil {
			r.PerSecond[o.Proto] = make([]int, secs)
		}
		r.PerSecond[o.Proto][i]++
		all[i]++
	}
	quiet := make([]bool, secs)
	for i := 1; i < secs-1; i++ { // first and last seconds are partial
		quiet[i] = true
	}
	for _, f := range r.Faults {
		for i := int(f.Start.Sub(t0).Seconds()) - 1; i <= int(f.Healed.Sub(t0).Seconds())+3 && i < secs; i++ {
			if i >= 0 {
				quiet[i] = false
			}
		}
	}
	r.DarkSecondsProto = map[string]int{}
	for i := 1; i < secs-1; i++ {
		if all[i] == 0 {
			r.DarkSeconds++
		}
		for p, per := range r.PerSecond {
			if per[i] == 0 {
				r.DarkSecondsProto[p]++
			}
		}
	}
	var base []int
	for i, q := range quiet {
		if q {
			base = append(base, all[i])
		}
	}
	sort.Ints(base)
	if len(base) > 0 {
		r.BaselineOps = float64(base[len(base)/2])
	}
	for _, f := range r.Faults {
		a, b := int(f.Start.Sub(t0).Seconds()), int(f.Healed.Sub(t0).Seconds())
		n, sum := 0, 0
		for i := a; i <= b && i < secs; i++ {
			sum += all[i]
			n++
		}
		if n > 0 && r.BaselineOps > 0 {
			f.Throughput = 100 * float64(sum) / float64(n) / r.BaselineOps
		}
		switch f.Kind {
		case "kill", "kill-leader", "kill2", "replace":
			down := strings.FieldsFunc(f.Target, func(r rune) bool { return r == '+' || r == '>' })
			for _, o := range ops {
				if o.First == "" || !slices.Contains(down, o.First) || o.Start.Before(f.Start) || o.Start.After(f.Healed) {
					continue
				}
				f.HitOps++
				if o.OK && o.Attempts > 1 {
					f.FailoverMax = max(f.FailoverMax, o.End.Sub(o.Start))
				}
			}
		}
	}
	var protos []string
	for p := range byProto {
		protos = append(protos, p)
	}
	sort.Strings(protos)
	for _, p := range protos {
		l := byProto[p]
		ps := protoStats{Proto: p, Ops: len(l)}
		var lats, fo, ends []time.Duration
		// longest outage per client: from its first failure to its next success
		sort.Slice(l, func(i, j int) bool { return l[i].Start.Before(l[j].Start) })
		failStart := map[int]time.Time{}
		var longest time.Duration
		for _, o := range l {
			if o.OK {
				ps.OK++
				lats = append(lats, o.lat)
				ends = append(ends, o.End.Sub(t0))
				if o.Attempts > 1 {
					ps.FailedOver++
					fo = append(fo, o.lat)
				}
				if fs, ok := failStart[o.Worker]; ok {
					longest = max(longest, o.End.Sub(fs))
					delete(failStart, o.Worker)
				}
			} else if _, ok := failStart[o.Worker]; !ok {
				failStart[o.Worker] = o.Start
			}
		}
		for _, fs := range failStart {
			longest = max(longest, end.Sub(fs))
		}
		sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
		q := func(x float64) float64 {
			if len(lats) == 0 {
				return 0
			}
			return float64(lats[min(len(lats)-1, int(x*float64(len(lats))))].Microseconds()) / 1000
		}
		ps.P50ms, ps.P99ms, ps.MaxMs = q(0.5), q(0.99), q(1)
		sort.Slice(fo, func(i, j int) bool { return fo[i] < fo[j] })
		if len(fo) > 0 {
			ps.FailoverP50, ps.FailoverMax = ms(fo[len(fo)/2]), ms(fo[len(fo)-1])
		}
		sort.Slice(ends, func(i, j int) bool { return ends[i] < ends[j] })
		prev := time.Duration(0)
		for _, e := range append(ends, end.Sub(t0)) {
			ps.MaxGapMs = max(ps.MaxGapMs, ms(e-prev))
			prev = e
		}
		ps.LongestOutMs = float64(longest.Milliseconds())
		ps.Availability = pct(ps.OK, ps.Ops)
		r.Protocols = append(r.Protocols, ps)
	}
	return r
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n==== chaos report (seed %d, %d nodes, %s, %.0fs of load) ====\n", r.Seed, r.Nodes, r.Scheme, r.LoadSeconds)
	fmt.Fprintf(w, "faults injected:")
	var kinds []string
	for k := range r.FaultCounts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, " %s=%d", k, r.FaultCounts[k])
	}
	fmt.Fprintln(w)
	for _, f := range r.Faults {
		red := "not reached"
		if f.Redundancy > 0 {
			red = f.Redundancy.Round(100 * time.Millisecond).String()
		}
		extra := ""
		if f.Shards > 0 {
			extra = fmt.Sprintf(" shards=%d", f.Shards)
		}
		if f.WasLeader && f.Kind != "kill-leader" {
			extra += " (target was the leader)"
		}
		if f.Note != "" {
			extra += " " + f.Note
		}
		if f.Err != "" {
			extra += " (" + f.Err + ")"
		}
		if f.HitOps > 0 {
			extra += fmt.Sprintf("; %d ops sent to it, served elsewhere within %v", f.HitOps, f.FailoverMax.Round(time.Millisecond))
		}
		fmt.Fprintf(w, "  +%-7v %-12s %-4s lasted %-6v ops/s %3.0f%% of baseline, full redundancy after %s%s\n", f.Start.Sub(r.t0).Round(100*time.Millisecond), f.Kind, f.Target, f.Healed.Sub(f.Start).Round(100*time.Millisecond), f.Throughput, red, extra)
	}
	fmt.Fprintf(w, "baseline (seconds away from faults): %.0f successful ops/s\n", r.BaselineOps)
	var dark []string
	for _, p := range sortedKeys(r.DarkSecondsProto) {
		dark = append(dark, fmt.Sprintf("%s %d", p, r.DarkSecondsProto[p]))
	}
	fmt.Fprintf(w, "whole seconds without a successful op: any protocol %d of %.0f; by protocol: %s\n", r.DarkSeconds, r.LoadSeconds, strings.Join(dark, ", "))
	var nk []string
	for k, why := range r.NotInjected {
		nk = append(nk, k+" ("+why+")")
	}
	sort.Strings(nk)
	fmt.Fprintf(w, "not injected: %s\n", strings.Join(nk, ", "))
	fmt.Fprintf(w, "%-5s %7s %7s %8s %13s %8s %8s %8s %13s %12s %9s\n", "proto", "ops", "ok", "failovr", "availability", "p50 ms", "p99 ms", "max ms", "failover p50", "failover max", "max gap")
	for _, p := range r.Protocols {
		fmt.Fprintf(w, "%-5s %7d %7d %8d %12.4f%% %8.1f %8.1f %8.1f %10.1fms %10.1fms %8.1fs\n", p.Proto, p.Ops, p.OK, p.FailedOver, p.Availability, p.P50ms, p.P99ms, p.MaxMs, p.FailoverP50, p.FailoverMax, p.MaxGapMs/1000)
	}
	fmt.Fprintln(w, "(availability counts an op that failed over to another node within its timeout as a success; max gap: longest stretch in which no op of the protocol completed)")
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "failed operations by error:")
		type kv struct {
			k string
			n int
		}
		var l []kv
		for k, n := range r.Errors {
			l = append(l, kv{k, n})
		}
		sort.Slice(l, func(i, j int) bool { return l[i].n > l[j].n })
		for i, e := range l {
			if i == 8 {
				break
			}
			fmt.Fprintf(w, "  %5d  %s\n", e.n, e.k)
		}
	}
	v := r.Verdict
	fmt.Fprintf(w, "messages: acked %d, lost %d, duplicate %d, unacked-but-stored %d; UID reuse %d; corrupt served %d; final HTTP failures %d\n",
		v.Acked, v.Lost, v.Duplicate, v.UnackedStored, len(v.Reused), r.Corrupt, v.FinalHTTPBad)
	for _, l := range [][]string{v.LostIDs, v.DupIDs, v.Reused, r.CorruptEvents, v.Errors} {
		for i, x := range l {
			if i == 10 {
				fmt.Fprintf(w, "  ... %d more\n", len(l)-10)
				break
			}
			fmt.Fprintf(w, "  %s\n", x)
		}
	}
	fmt.Fprintf(w, "content references: %d object(s) short\n", v.RefProblems)
	for _, l := range [][]string{v.RefAudit, v.RefProblemList} {
		for _, x := range l {
			fmt.Fprintf(w, "  %s\n", x)
		}
	}
	if r.Scrub != "" {
		fmt.Fprintf(w, "final scrub: %s\n", r.Scrub)
	}
	fmt.Fprintf(w, "shared mailbox history: %d ops (%d reads left out: the mailbox changed while they ran), linearizable: %s\n", r.HistoryOps, r.UncleanReads, r.Linearizable)
	if r.HealErr != "" {
		fmt.Fprintf(w, "final heal: NOT fully redundant after %.1fs: %s\n", r.HealSeconds, r.HealErr)
	} else {
		fmt.Fprintf(w, "final heal: full redundancy %.1fs after the load stopped\n", r.HealSeconds)
	}
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// writePNG draws successful operations per second (one line per protocol)
// with red bars where a fault started and green ones where it was healed.
func (s *state) writePNG(path string, t0, end time.Time, faults []*fault) error {
	secs := int(end.Sub(t0).Seconds()) + 1
	const W, H, pad = 1200, 400, 20
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	colors := map[string]color.RGBA{"http": {0, 90, 200, 255}, "lmtp": {230, 140, 0, 255}, "smtp": {140, 60, 180, 255}, "imap": {0, 150, 80, 255}, "idle": {120, 120, 120, 255}, "fuse": {0, 170, 190, 255}}
	series := map[string][]int{}
	peak := 1
	s.rec.mu.Lock()
	for _, o := range s.rec.ops {
		if !o.OK {
			continue
		}
		i := int(o.End.Sub(t0).Seconds())
		if i < 0 || i >= secs {
			continue
		}
		if series[o.Proto] == nil {
			series[o.Proto] = make([]int, secs)
		}
		series[o.Proto][i]++
		peak = max(peak, series[o.Proto][i])
	}
	s.rec.mu.Unlock()
	x := func(sec float64) int { return pad + int(sec*float64(W-2*pad)/float64(secs)) }
	y := func(v int) int { return H - pad - v*(H-2*pad)/peak }
	vline := func(px int, c color.RGBA) {
		for yy := pad; yy < H-pad; yy++ {
			for dx := 0; dx < 2; dx++ {
				img.Set(px+dx, yy, c)
			}
		}
	}
	for _, f := range faults {
		vline(x(f.Start.Sub(t0).Seconds()), color.RGBA{220, 0, 0, 255})
		vline(x(f.Healed.Sub(t0).Seconds()), color.RGBA{120, 200, 120, 255})
	}
	// axes
	for xx := pad; xx < W-pad; xx++ {
		img.Set(xx, H-pad, color.Black)
	}
	for yy := pad; yy < H-pad; yy++ {
		img.Set(pad, yy, color.Black)
	}
	for i := 0; i < secs; i += 10 { // tick every 10 s
		for d := 0; d < 6; d++ {
			img.Set(x(float64(i)), H-pad+d, color.Black)
		}
	}
	line := func(x0, y0, x1, y1 int, c color.RGBA) {
		n := max(abs(x1-x0), abs(y1-y0), 1)
		for i := 0; i <= n; i++ {
			img.Set(x0+(x1-x0)*i/n, y0+(y1-y0)*i/n, c)
			img.Set(x0+(x1-x0)*i/n, y0+(y1-y0)*i/n+1, c)
		}
	}
	var protos []string
	for p := range series {
		protos = append(protos, p)
	}
	sort.Strings(protos)
	for li, p := range protos {
		v, c := series[p], colors[p]
		for i := 1; i < secs; i++ {
			line(x(float64(i-1)+0.5), y(v[i-1]), x(float64(i)+0.5), y(v[i]), c)
		}
		// legend: a colored square per protocol at the top right
		for yy := 4; yy < 14; yy++ {
			for xx := W - 20 - 40*len(protos) + li*40; xx < W-10-40*len(protos)+li*40; xx++ {
				img.Set(xx, yy, c)
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func abs(a int) int {
	if a < 0 {
		return -a
	}
	return a
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
