package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

var (
	cleanupMu  sync.Mutex
	cleanupFns []func()
	cleanOnce  sync.Once
)

func atCleanup(fn func()) { cleanupMu.Lock(); cleanupFns = append(cleanupFns, fn); cleanupMu.Unlock() }

func cleanup() {
	cleanOnce.Do(func() {
		cleanupMu.Lock()
		fns := cleanupFns
		cleanupMu.Unlock()
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
	})
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "chaos: FATAL "+format+"\n", args...)
	cleanup()
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "chaos: %s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05.000")}, args...)...)
}

func handleSignals() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nchaos: %v: stopping the nodes, removing rules and temporary files\n", s)
		cleanup()
		os.Exit(130)
	}()
}
