package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
	webfuse "hastore/webfs/fuse"
)

const mountUsage = `Usage: hastore mount --addr ADDR,... --cred DIR --site NAME [flags] MOUNTPOINT

Mounts a web site's files read-write with FUSE (for nginx, Apache or PHP on
a web host). Writes are committed to the cluster when a file is closed or
fsynced; changes made through other mounts or nodes show within the
attribute timeout. When the node in use fails, the mount goes on through
another one. SIGINT or SIGTERM commits what is buffered and unmounts.

--cred DIR is a mount credential for the site ('hastore admin cred issue
mount --site NAME'): it reaches that site and nothing else of the cluster,
so a web host holds no more than its own sites. --cluster-key-file is for
clusters run with --insecure only. HASTORE_ADDR, HASTORE_CRED and
HASTORE_CLUSTER_KEY_FILE stand in for --addr, --cred and --cluster-key-file.

Flags:
`

// mount runs `hastore mount`: it returns once the site is unmounted.
func mount(args []string) error {
	fset := flag.NewFlagSet("mount", flag.ContinueOnError)
	fset.Usage = func() {
		fmt.Fprint(fset.Output(), mountUsage)
		fset.PrintDefaults()
	}
	addr := fset.String("addr", os.Getenv("HASTORE_ADDR"), "cluster node addresses, comma-separated (the mount fails over between them)")
	credDir := fset.String("cred", os.Getenv("HASTORE_CRED"), "mount credential directory (cert.pem, key.pem, ca.pem) for the site: mutual TLS")
	keyFile := fset.String("cluster-key-file", os.Getenv("HASTORE_CLUSTER_KEY_FILE"), "file holding the cluster secret, for clusters run with --insecure (plaintext)")
	site := fset.String("site", "", "the site to mount")
	attrTimeout := fset.Duration("attr-timeout", time.Second, "how long the kernel caches names and attributes: the longest a change made elsewhere stays unseen")
	allowOther := fset.Bool("allow-other", false, "let other users (the web server's) use the mount; permissions are checked against the files' modes")
	retryFor := fset.Duration("retry-for", 2*time.Minute, "how long to retry while no node of the cluster can answer before failing a call with EIO")
	preferLeader := fset.Bool("prefer-leader", true, "talk to the Raft leader first if it is among --addr (a change through another node takes longer to be acknowledged)")
	debug := fset.Bool("debug", false, "log every FUSE request")
	logFormat := fset.String("log-format", "text", "text (timestamped lines) or json (one JSON object a line, for a log collector)")
	pos, err := mountArgs(fset, args)
	if err != nil {
		return err
	}
	jsonLog, err := jsonLogs(*logFormat)
	if err != nil {
		return err
	}
	logger := log.New(os.Stderr, "", log.LstdFlags)
	if jsonLog {
		h := slog.NewJSONHandler(os.Stderr, nil)
		slog.SetDefault(slog.New(h))
		logger = slog.NewLogLogger(h, slog.LevelInfo)
	}
	raiseFileLimit()
	if len(pos) != 1 {
		fset.Usage()
		return errors.New("want exactly one MOUNTPOINT")
	}
	mountpoint := pos[0]
	if *addr == "" || *site == "" || (*credDir == "" && *keyFile == "") {
		return errors.New("--addr (or HASTORE_ADDR), --cred (or HASTORE_CRED; --cluster-key-file for a cluster run with --insecure) and --site are required")
	}
	if err := webfuse.CheckMountpoint(mountpoint); err != nil {
		return err
	}
	var cfg transport.Config
	scoped := false // a mount credential: no Cluster calls (status, capacity)
	if *credDir != "" {
		tc, id, err := transport.LoadCredential(*credDir)
		if err != nil {
			return err
		}
		if !id.MaySite(*site) {
			return fmt.Errorf("credential %s in %s reaches sites %s, not %s: issue one with 'hastore admin cred issue mount --site %s'",
				id.ID, *credDir, strings.Join(id.Sites, ","), *site, *site)
		}
		cfg.ClientTLS, scoped = tc, id.Role == transport.RoleMount
	} else {
		key, err := transport.LoadKey(*keyFile)
		if err != nil {
			return err
		}
		cfg.Key = key
	}
	opts, err := transport.DialOptions(cfg)
	if err != nil {
		return err
	}
	var conns []grpc.ClientConnInterface
	var addrs []string
	for _, a := range strings.Split(*addr, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		c, err := grpc.NewClient("passthrough:///"+a, opts...)
		if err != nil {
			return fmt.Errorf("node %s: %w", a, err)
		}
		defer c.Close()
		conns = append(conns, c)
		addrs = append(addrs, a)
	}
	if len(conns) == 0 {
		return errors.New("--addr names no node")
	}
	statfs := clusterCapacity(conns)
	if scoped {
		// The cluster's status is not a mount credential's business:
		// no leader preference, and statfs reports no capacity.
		*preferLeader, statfs = false, nil
	}
	if *preferLeader {
		conns, addrs = leaderFirst(conns, addrs)
	}
	tree := webfuse.NewClient(conns...).Site(*site)
	srv, err := webfuse.Mount(mountpoint, tree, webfuse.Options{
		AttrTimeout: *attrTimeout,
		AllowOther:  *allowOther,
		RetryFor:    *retryFor,
		Statfs:      statfs,
		Logger:      logger,
		Debug:       *debug,
	})
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no site %q in the cluster (see hastore admin site list): %w", *site, err)
		}
		return err
	}
	logger.Printf("hastore mount: site %s mounted on %s through %s; SIGINT or SIGTERM unmounts", *site, mountpoint, strings.Join(addrs, ","))

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	gone := make(chan error, 1)
	go func() { gone <- srv.Wait() }()
	for {
		select {
		case err := <-gone:
			// Unmounted from outside (umount, fusermount3 -u).
			logger.Printf("hastore mount: %s was unmounted", mountpoint)
			return err
		case sig := <-sigs:
			logger.Printf("hastore mount: %v: committing and unmounting %s", sig, mountpoint)
			err := unmountRetrying(srv)
			if err == nil {
				<-gone
				logger.Printf("hastore mount: unmounted %s", mountpoint)
				return nil
			}
			if !errors.Is(err, webfuse.ErrBusy) {
				return err
			}
			// Busy: take the mount point away now and serve the files
			// still open until they are closed.
			logger.Printf("hastore mount: %v; detaching it: files still open keep working until they are closed (signal again to quit at once)", err)
			if derr := srv.DetachUnmount(); derr != nil {
				return fmt.Errorf("%w; and detaching: %v", err, derr)
			}
			select {
			case err := <-gone:
				logger.Printf("hastore mount: the last open file of %s was closed", mountpoint)
				return err
			case sig := <-sigs:
				cerr := srv.FS.Commit()
				return fmt.Errorf("%v while files were still open in %s; buffered writes committed (%v)", sig, mountpoint, errOrOK(cerr))
			}
		}
	}
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// unmountRetrying unmounts, trying a few times over a second while the
// mount is busy (a process may be closing its files).
func unmountRetrying(srv *webfuse.Server) error {
	var err error
	for range 5 {
		if err = srv.Unmount(); !errors.Is(err, webfuse.ErrBusy) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// mountArgs parses flags given before and after the mount point.
func mountArgs(fset *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fset.Parse(args); err != nil {
			return nil, err
		}
		args = fset.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// clusterCapacity answers statfs from the cluster's status: the disks of
// the nodes that are up, in the bytes of data they can hold under the
// erasure scheme (k of k+m shards are data).
func clusterCapacity(conns []grpc.ClientConnInterface) func(ctx context.Context) (webfuse.Capacity, error) {
	return func(ctx context.Context) (webfuse.Capacity, error) {
		var err error
		for _, cc := range conns {
			var st *pb.ClusterStatus
			if st, err = pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{}); err != nil {
				continue
			}
			var used, free uint64
			for _, n := range st.GetNodes() {
				if n.GetUp() {
					used += uint64(max(n.GetDiskUsed(), 0))
					free += uint64(max(n.GetDiskFree(), 0))
				}
			}
			k, m := schemeKM(st.GetScheme())
			return webfuse.Capacity{Total: (used + free) / (k + m) * k, Free: free / (k + m) * k}, nil
		}
		return webfuse.Capacity{}, err
	}
}

// schemeKM parses an erasure scheme "k+m"; 1+0 if it cannot.
func schemeKM(s string) (k, m uint64) {
	ks, ms, ok := strings.Cut(s, "+")
	a, err1 := strconv.ParseUint(ks, 10, 32)
	b, err2 := strconv.ParseUint(ms, 10, 32)
	if !ok || err1 != nil || err2 != nil || a == 0 {
		return 1, 0
	}
	return a, b
}

// leaderFirst moves the Raft leader, if it is one of addrs, to the front.
func leaderFirst(conns []grpc.ClientConnInterface, addrs []string) ([]grpc.ClientConnInterface, []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, cc := range conns {
		st, err := pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{})
		if err != nil {
			continue
		}
		for _, n := range st.GetNodes() {
			if n.GetId() != st.GetLeader() {
				continue
			}
			for i, a := range addrs {
				if a == n.GetAddress() && i > 0 {
					conns = append([]grpc.ClientConnInterface{conns[i]}, append(conns[:i:i], conns[i+1:]...)...)
					addrs = append([]string{a}, append(addrs[:i:i], addrs[i+1:]...)...)
				}
			}
		}
		break
	}
	return conns, addrs
}
