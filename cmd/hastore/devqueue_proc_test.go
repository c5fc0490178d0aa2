//go:build linux

package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"hastore/testing/cluster"
	remote "hastore/testing/outbound"
)

// TestDevOutboundQueue: `hastore dev` works the outbound queue as serve
// does. A message submitted on dev's submission port (2587) to a remote
// domain is accepted and arrives at the test's remote MTA, found through
// the test's DNS (--mail-dns-server) — before, dev refused it 550 5.7.1.
// Then `hastore admin status` reports the queue's size. dev's mail ports
// are fixed (2525, 2587, ...): the test needs them free.
func TestDevOutboundQueue(t *testing.T) {
	bin := cluster.HastoreBinary(t)
	dns := remote.StartDNS(t)
	sink := remote.StartSink(t, "127.0.0.1:0")
	dns.Add(t, "remote.test. 60 IN MX 10 mx.remote.test.")
	dns.Add(t, "mx.remote.test. 60 IN A 127.0.0.1")
	_, sinkPort, _ := net.SplitHostPort(sink.Addr)
	clusterPort := freePorts(t, 3)

	dir := t.TempDir()
	var out bytes.Buffer
	cmd := exec.Command(bin, "dev", "--dir", filepath.Join(dir, "dev"), "--nodes", "3", "--port", strconv.Itoa(clusterPort),
		"--http-port", "0", "--cluster-tls=false", "--mail-dns-server", dns.Addr, "--queue-smtp-port", sinkPort, "--queue-poll", "200ms")
	cmd.Env = append(os.Environ(), "HASTORE_ADDR=", "HASTORE_CRED=", "HASTORE_CLUSTER_KEY_FILE=")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("hastore dev output:\n%s", out.String())
		}
	})

	msg := "From: demo@example.test\r\nTo: bob@remote.test\r\nSubject: from dev\r\n\r\nhello from dev\r\n"
	send := func() error {
		c, err := gosmtp.Dial("127.0.0.1:2587")
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Auth(sasl.NewPlainClient("", "demo@example.test", "demo")); err != nil {
			return err
		}
		return c.SendMail("demo@example.test", []string{"bob@remote.test"}, strings.NewReader(msg))
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := send()
		if err == nil {
			break
		}
		if e, ok := err.(*gosmtp.SMTPError); ok && e.Code == 550 {
			t.Fatalf("dev refused a remote recipient: %v", err)
		}
		select {
		case err := <-exited:
			t.Fatalf("hastore dev exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev did not take the message in 90 s: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	deadline = time.Now().Add(60 * time.Second)
	for len(sink.Got()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the remote MTA received nothing in 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := sink.Got()
	if len(got) != 1 || got[0].From != "demo@example.test" || len(got[0].To) != 1 || got[0].To[0] != "bob@remote.test" {
		t.Fatalf("remote MTA received %+v, want one message from demo@example.test to bob@remote.test", got)
	}
	if !bytes.HasSuffix(got[0].Data, []byte("\r\n\r\nhello from dev\r\n")) {
		t.Errorf("body not received byte for byte:\n%q", got[0].Data)
	}

	// admin status reports the queue (empty once the entry is removed).
	deadline = time.Now().Add(30 * time.Second)
	for {
		st := exec.Command(bin, "admin", "status")
		st.Env = append(os.Environ(), "HASTORE_ADDR=127.0.0.1:"+strconv.Itoa(clusterPort), "HASTORE_CRED=",
			"HASTORE_CLUSTER_KEY_FILE="+filepath.Join(dir, "dev", "cluster.key"))
		b, _ := st.CombinedOutput() // the exit code judges the cluster, not the queue
		if strings.Contains(string(b), "mail queue: empty\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin status does not report an empty mail queue:\n%s", b)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// freePorts returns the first of n consecutive loopback ports free now
// (dev's nodes take its --port and the ones after it).
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{l}
		for i := 1; i < n; i++ {
			if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i)); err == nil {
				ls = append(ls, l)
			}
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == n {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}
