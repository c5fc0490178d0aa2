package benchproc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a child process in its own process group (Ctrl-C reaches only
// us, and we stop the children in order); Pdeathsig makes the kernel kill it
// should we be SIGKILLed.
type Proc struct {
	Name    string // for messages
	LogPath string // its stdout and stderr
	Cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// Start starts argv with env added to our environment, its output going to
// a new file at logPath.
func Start(name, logPath string, env []string, argv ...string) (*Proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &Proc{Name: name, LogPath: logPath}
	p.Cmd = exec.Command(argv[0], argv[1:]...)
	p.Cmd.Stdout, p.Cmd.Stderr = logf, logf
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p.exited = make(chan struct{})
	go func() {
		p.waitErr = p.Cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// Pid returns the process ID, which is also its process group ID.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Alive reports whether the process has not exited yet.
func (p *Proc) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Err returns the process's exit error once it has exited (nil before).
func (p *Proc) Err() error {
	if p.Alive() {
		return nil
	}
	return p.waitErr
}

// Stop sends SIGTERM and, if the process has not exited within a few
// seconds, SIGKILLs its whole process group; then it SIGKILLs whatever the
// leader left behind in its group (dovecot's children, nginx's workers).
// A nil or unstarted Proc is a no-op.
func (p *Proc) Stop() {
	if p == nil || p.Cmd == nil || p.Cmd.Process == nil {
		return
	}
	if p.Alive() {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
}

// LogTail returns the last 3000 bytes of the process's log.
func (p *Proc) LogTail() string {
	b, _ := os.ReadFile(p.LogPath)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// ExitReport describes the exited process with the tail of its log, for an
// error message: "NAME exited: ERR\n--- its log ---\nTAIL".
func (p *Proc) ExitReport() string {
	return fmt.Sprintf("%s exited: %v\n--- its log ---\n%s", p.Name, p.Err(), p.LogTail())
}

// ---- CPU accounting ----

// GroupCPU returns the CPU seconds (user+system) used so far by the live
// members of p's process group and, with reaped, also by the children the
// leader has reaped (cutime/cstime: e.g. dovecot's lmtp and imap processes
// that have exited).
func (p *Proc) GroupCPU(reaped bool) float64 {
	pgid := p.Cmd.Process.Pid
	minFields := 13
	if reaped {
		minFields = 15
	}
	ents, _ := os.ReadDir("/proc")
	var sum float64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStat(pid)
		if err != nil || len(f) < minFields {
			continue
		}
		// f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15,
		// cutime 16, cstime 17.
		if g, _ := strconv.Atoi(f[2]); g != pgid {
			continue
		}
		for _, i := range []int{11, 12} {
			v, _ := strconv.ParseFloat(f[i], 64)
			sum += v
		}
		if reaped && pid == pgid {
			for _, i := range []int{13, 14} {
				v, _ := strconv.ParseFloat(f[i], 64)
				sum += v
			}
		}
	}
	return sum / 100 // USER_HZ
}

// CPUSeconds returns the user+system CPU time of process pid so far, from
// /proc/PID/stat (utime and stime, fields 14 and 15, in USER_HZ = 100 ticks).
// It fails once the process is gone.
func CPUSeconds(pid int) (float64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return (ut + st) / 100, nil
}

// procStat returns the fields of /proc/PID/stat from field 3 (state) on.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// SelfCPU returns the CPU seconds (user+system) this process used so far.
func SelfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// HostTimes returns the host's busy and total CPU ticks from /proc/stat
// (idle and iowait count as not busy) and its number of CPUs.
func HostTimes() (busy, total float64, cpus int) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "cpu") && len(line) > 3 && line[3] >= '0' && line[3] <= '9' {
			cpus++
		}
		if strings.HasPrefix(line, "cpu ") {
			for i, f := range strings.Fields(line)[1:] {
				v, _ := strconv.ParseFloat(f, 64)
				if i >= 8 { // guest time is already counted in user
					break
				}
				total += v
				if i != 3 && i != 4 { // idle, iowait
					busy += v
				}
			}
		}
	}
	return busy, total, cpus
}

// ---- network ----

// FreeAddrs returns n loopback addresses whose ports were free a moment ago.
func FreeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// WaitListening waits until every address accepts TCP connections, failing
// early should p exit.
func WaitListening(ctx context.Context, p *Proc, timeout time.Duration, addrs ...string) error {
	deadline := time.Now().Add(timeout)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if !p.Alive() {
				return fmt.Errorf("%s", p.ExitReport())
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s: %s not listening within %v: %v", p.Name, a, timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Group is the set of processes that make up one system under test.
type Group []*Proc

// CPU returns the CPU seconds the group's processes have used (with reaped,
// also their children that have exited).
func (g Group) CPU(reaped bool) float64 {
	var s float64
	for _, p := range g {
		s += p.GroupCPU(reaped)
	}
	return s
}

// CheckAlive stops the program with the log of any process of the group
// that has exited.
func (g Group) CheckAlive(during string) {
	for _, p := range g {
		if !p.Alive() {
			Fatalf("%s exited during %s: %v\n--- its log ---\n%s", p.Name, during, p.Err(), p.LogTail())
		}
	}
}
