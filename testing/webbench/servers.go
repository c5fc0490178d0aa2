package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
	"hastore/testing/benchproc"
)

// target is one system under test.
type target struct {
	name       string
	httpAddrs  []string        // hastore: node i's HTTP address; nginx: one
	host       string          // Host header
	procs      benchproc.Group // whose CPU counts
	pprofAddrs []string        // hastore nodes' pprof servers, with -profile
	leader     string
	ids        []string // hastore node IDs, by index
}

// pick returns the index of the node the single-node cells measure: n1,
// the leader, or the first follower.
func (t *target) pick(role string) int {
	for i, id := range t.ids {
		switch {
		case role == "n1":
			return 0
		case role == "leader" && id == t.leader, role == "follower" && id != t.leader:
			return i
		}
	}
	return 0
}

// nodeLabel names the node pick chooses, for the table's header.
func (t *target) nodeLabel(role string) string {
	if len(t.ids) == 0 {
		return ""
	}
	id := t.ids[t.pick(role)]
	if role == "n1" {
		return id
	}
	return id + " (" + role + ")"
}

func (t *target) cpu() float64 { return t.procs.CPU(false) }

func (t *target) checkAlive(during string) { t.procs.CheckAlive(during) }

// ---- hastore: a loopback cluster of `hastore serve --http` processes ----

func startHastore(ctx context.Context, cfg config, bin, work, www, label string, pprof bool) *target {
	key, err := transport.GenerateKey()
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	keyFile := filepath.Join(work, "cluster.key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		benchproc.Fatalf("%v", err)
	}
	addrs, err := benchproc.FreeAddrs(3 * cfg.nodes)
	if err != nil {
		benchproc.Fatalf("free ports: %v", err)
	}
	var peers, clusterAddrs []string
	for i := range cfg.nodes {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, addrs[i]))
		clusterAddrs = append(clusterAddrs, addrs[i])
	}
	t := &target{name: fmt.Sprintf("%s (%d nodes)", label, cfg.nodes), host: siteName}
	var procs []*benchproc.Proc
	benchproc.AtCleanup(func() {
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(p.Stop)
		}
		wg.Wait()
	})
	benchproc.Progress("starting %d %s serve processes (shards %s) in %s", cfg.nodes, label, cfg.scheme, work)
	for i := range cfg.nodes {
		id := fmt.Sprintf("n%d", i+1)
		httpAddr := addrs[cfg.nodes+i]
		var env []string
		t.ids = append(t.ids, id)
		if pprof {
			t.pprofAddrs = append(t.pprofAddrs, addrs[2*cfg.nodes+i])
			env = append(env, "HASTORE_BENCH_PPROF="+addrs[2*cfg.nodes+i])
		}
		p, err := benchproc.Start(label+" node "+id, filepath.Join(work, id+".log"), env,
			bin, "serve", "--node", id, "--data", filepath.Join(work, id), "--listen", addrs[i],
			"--peers", strings.Join(peers, ","), "--cluster-key-file", keyFile, "--insecure", "--shards", cfg.scheme,
			"--log-level", "warn", "--http", httpAddr)
		if err != nil {
			benchproc.Fatalf("starting node %s: %v", id, err)
		}
		procs = append(procs, p)
		t.httpAddrs = append(t.httpAddrs, httpAddr)
	}
	t.procs = procs
	t0 := time.Now()
	t.leader = waitHealthy(ctx, key, clusterAddrs, procs, 90*time.Second)
	for i, p := range procs {
		if err := benchproc.WaitListening(ctx, p, 30*time.Second, t.httpAddrs[i]); err != nil {
			benchproc.Fatalf("%v", err)
		}
	}
	benchproc.Progress("hastore healthy after %v, leader %s", time.Since(t0).Round(time.Millisecond), t.leader)

	admin := func(args ...string) {
		argv := append([]string{"admin", "--addr", strings.Join(clusterAddrs, ","), "--cluster-key-file", keyFile}, args...)
		var last []byte
		for try := 0; try < 20; try++ {
			out, err := exec.CommandContext(ctx, bin, argv...).CombinedOutput()
			if err == nil {
				return
			}
			last = out
			time.Sleep(500 * time.Millisecond)
		}
		benchproc.Fatalf("hastore admin %s: %s", strings.Join(args, " "), last)
	}
	t1 := time.Now()
	admin("site", "add", siteName)
	admin("site", "put", siteName, www)
	benchproc.Progress("site %s added and %s uploaded in %v", siteName, www, time.Since(t1).Round(time.Millisecond))
	return t
}

// waitHealthy waits until some node is Raft leader and every node sees every
// node up, and returns the leader's ID.
func waitHealthy(ctx context.Context, key []byte, addrs []string, procs []*benchproc.Proc, timeout time.Duration) string {
	opts, err := transport.DialOptions(transport.Config{Key: key})
	if err != nil {
		benchproc.Fatalf("%v", err)
	}
	var clients []pb.ClusterClient
	for _, a := range addrs {
		conn, err := grpc.NewClient("passthrough:///"+a, opts...)
		if err != nil {
			benchproc.Fatalf("%v", err)
		}
		defer conn.Close()
		clients = append(clients, pb.NewClusterClient(conn))
	}
	deadline := time.Now().Add(timeout)
	for {
		var last error
		var leader string
		for i, c := range clients {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := c.Status(cctx, &pb.StatusRequest{})
			cancel()
			if err != nil {
				last = fmt.Errorf("%s: %v", addrs[i], err)
				break
			}
			if st.Leader == "" {
				last = fmt.Errorf("%s knows no leader", addrs[i])
				break
			}
			leader = st.Leader
			up := 0
			for _, s := range st.Nodes {
				if s.Up {
					up++
				}
			}
			if up < len(addrs) {
				last = fmt.Errorf("%s sees %d of %d nodes up", addrs[i], up, len(addrs))
				break
			}
		}
		if last == nil {
			return leader
		}
		for _, p := range procs {
			if !p.Alive() {
				benchproc.Fatalf("%s exited while starting: %v\n--- its log ---\n%s", p.Name, p.Err(), p.LogTail())
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			benchproc.Fatalf("cluster not healthy within %v: %v", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- nginx: generated config in a temporary directory ----

const nginxConf = `# generated by testing/webbench
user nobody nogroup;
worker_processes auto;
daemon off;
master_process on;
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {{DIR}}/body;
  proxy_temp_path {{DIR}}/proxy;
  fastcgi_temp_path {{DIR}}/fastcgi;
  uwsgi_temp_path {{DIR}}/uwsgi;
  scgi_temp_path {{DIR}}/scgi;
  types { text/html html; application/octet-stream bin; }
  default_type application/octet-stream;
  server {
    listen {{ADDR}};
    server_name {{HOST}};
    root {{ROOT}};
    location / { }
  }
}
`

func startNginx(ctx context.Context, cfg config, work, www string) *target {
	bin := cfg.nginx
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("nginx"); err != nil {
			if _, err2 := os.Stat("/usr/sbin/nginx"); err2 == nil {
				bin = "/usr/sbin/nginx"
			} else {
				benchproc.Fatalf("nginx not found (Debian: apt-get install -y nginx-light), or give -nginx PATH")
			}
		}
	}
	dir := filepath.Join(work, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		benchproc.Fatalf("%v", err)
	}
	addrs, err := benchproc.FreeAddrs(1)
	if err != nil {
		benchproc.Fatalf("free ports: %v", err)
	}
	conf := strings.NewReplacer("{{DIR}}", dir, "{{ADDR}}", addrs[0], "{{HOST}}", siteName, "{{ROOT}}", www).Replace(nginxConf)
	if os.Geteuid() != 0 {
		conf = strings.Replace(conf, "user nobody nogroup;\n", "", 1) // only root may switch users
	}
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		benchproc.Fatalf("%v", err)
	}
	p, err := benchproc.Start("nginx", filepath.Join(dir, "stderr.log"), nil, bin, "-c", confFile, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		benchproc.Fatalf("starting nginx: %v", err)
	}
	benchproc.AtCleanup(p.Stop)
	if err := benchproc.WaitListening(ctx, p, 10*time.Second, addrs[0]); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		benchproc.Fatalf("%v\n--- error.log ---\n%s", err, b)
	}
	return &target{name: "nginx", httpAddrs: addrs, host: siteName, procs: []*benchproc.Proc{p}}
}

// verify GETs every file from every HTTP address of t and compares the
// bytes with the local copies (retrying a while: a follower may still be
// catching up with the upload).
func verify(ctx context.Context, t *target, files []benchFile) {
	cl := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range t.httpAddrs {
		for _, f := range files {
			for {
				err := func() error {
					req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/"+f.name, nil)
					req.Host = t.host
					resp, err := cl.Do(req)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					body, err := io.ReadAll(resp.Body)
					if err != nil {
						return err
					}
					if resp.StatusCode != http.StatusOK {
						return fmt.Errorf("status %s", resp.Status)
					}
					if !bytes.Equal(body, f.data) {
						return fmt.Errorf("got %d bytes that differ from the %d uploaded", len(body), len(f.data))
					}
					return nil
				}()
				if err == nil {
					break
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					benchproc.Fatalf("%s: GET http://%s/%s (Host %s): %v", t.name, addr, f.name, t.host, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
}
