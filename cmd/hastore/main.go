// Command hastore is the one hastore binary: a cluster node (serve), a
// local development cluster (dev) and the administration client (admin).
// It holds flags and wiring only; the work is done in the packages.
package main

import (
	"fmt"
	"os"
)

const usage = `hastore — replicated, erasure-coded storage for mail and web hosting

Usage:
  hastore serve --node ID --data DIR --listen ADDR --peers ID=ADDR,... --cluster-key-file KEY [flags]
  hastore dev [--dir DIR] [--nodes 3]
  hastore admin [--addr ADDR,...] [--cluster-key-file KEY] <command> ...
  hastore admin keygen
  hastore mount --addr ADDR,... --cluster-key-file KEY --site NAME [flags] MOUNTPOINT

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
		os.Exit(1)
	}
}
