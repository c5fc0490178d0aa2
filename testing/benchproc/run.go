package benchproc

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ---- cleanup: on normal exit, on fatal errors and on Ctrl-C ----

var (
	name        = "bench"
	cleanupMu   sync.Mutex
	cleanupFns  []func()
	cleanupOnce sync.Once
	stopping    atomic.Bool
)

// SetName sets the program name that prefixes the messages of [Fatalf],
// [Logf], [Progress] and the signal handler, and names the pprof hook file of
// [BuildHastore]. Call it first in main.
func SetName(program string) { name = program }

// Stopping reports whether a signal arrived: the measurements still running
// then fail, and must neither print nor race the signal handler's exit.
func Stopping() bool { return stopping.Load() }

// AtCleanup registers fn to run (last registered first) when the program
// ends, however it ends short of SIGKILL.
func AtCleanup(fn func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanupFns = append(cleanupFns, fn)
}

// Cleanup runs the functions registered with [AtCleanup], once.
func Cleanup() {
	cleanupOnce.Do(func() {
		cleanupMu.Lock()
		fns := cleanupFns
		cleanupFns = nil
		cleanupMu.Unlock()
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
	})
}

// Fatalf prints the message, cleans up and exits with status 1. After a
// signal it blocks instead: the signal handler cleans up and exits.
func Fatalf(format string, args ...any) {
	if stopping.Load() {
		select {} // the signal handler cleans up and exits
	}
	fmt.Fprintf(os.Stderr, name+": "+format+"\n", args...)
	Cleanup()
	os.Exit(1)
}

// Logf prints a message to stderr, unless a signal arrived.
func Logf(format string, args ...any) {
	if stopping.Load() {
		return
	}
	fmt.Fprintf(os.Stderr, name+": "+format+"\n", args...)
}

// Progress prints a time-stamped message to stderr, unless a signal arrived.
func Progress(format string, args ...any) {
	if stopping.Load() {
		return
	}
	fmt.Fprintf(os.Stderr, name+": %s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

// HandleSignals cancels, cleans up and exits with status 130 on Ctrl-C,
// SIGTERM or a closed terminal, after printing "stopping" followed by
// what (e.g. "hastore and dovecot, removing temporary files").
func HandleSignals(cancel context.CancelFunc, what string) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		stopping.Store(true)
		fmt.Fprintf(os.Stderr, "\n%s: %v: stopping %s\n", name, s, what)
		cancel()
		Cleanup()
		os.Exit(130)
	}()
}
