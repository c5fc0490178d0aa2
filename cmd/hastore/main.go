// Command hastore is the one hastore binary: a cluster node (serve), a
// local development cluster (dev) and the administration client (admin).
// It holds flags and wiring only; the work is done in the packages.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
)

const usage = `hastore — replicated, erasure-coded storage for mail and web hosting

Usage:
  hastore serve --node ID --data DIR --listen ADDR --peers ID=ADDR,... --cluster-key-file KEY --cred DIR [flags]
  hastore dev [--dir DIR] [--nodes 3]
  hastore admin [--addr ADDR,...] [--cred DIR] <command> ...
  hastore admin keygen | cred ca --out DIR | cred issue KIND --ca DIR --out DIR
  hastore mount --addr ADDR,... --cred DIR --site NAME [flags] MOUNTPOINT

--cred DIR is a credential made by 'hastore admin cred issue' (node, admin or
mount); the cluster port runs mutual TLS. 'serve --insecure' runs it in
plaintext instead (tests and closed networks only).

Run 'hastore <command> -h' for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "dev":
		err = dev(args)
	case "admin":
		err = admin(args, os.Stdin, os.Stdout)
	case "mount":
		err = mount(args)
	case "help", "-h", "--help":
		fmt.Fprint(os.Stdout, usage)
	default:
		fmt.Fprintf(os.Stderr, "hastore: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "hastore %s: %v\n", os.Args[1], err)
		var ec interface{ ExitCode() int } // admin status's documented codes
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

// raiseFileLimit lifts the soft open-file limit to the hard one and says
// what it is: a node holds a descriptor per client connection (tens of
// thousands of IMAP clients), and running out stops it accepting on every
// port. (Go's runtime already sets the soft limit to hard−1 at start; the
// mail listeners check their caps against the result.) serve, dev and
// mount call it once their log is set up, so that its line comes out in
// the --log-format chosen.
func raiseFileLimit() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		slog.Warn("cannot read the open-file limit", "err", err)
		return
	}
	if rl.Cur >= rl.Max {
		slog.Info("open-file limit", "soft", rl.Cur, "hard", rl.Max)
		return
	}
	old := rl.Cur
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		slog.Warn("cannot raise the open-file limit to the hard limit; raise LimitNOFILE / ulimit -n", "soft", old, "hard", rl.Max, "err", err)
		return
	}
	slog.Info("raised the open-file limit to the hard limit", "was", old, "now", rl.Cur)
}
