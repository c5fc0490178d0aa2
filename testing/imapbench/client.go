package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// client is a minimal IMAP client that times the wire, not a library's
// parsing: it sends a command and reads lines up to the tagged answer,
// literals folded into their line. Both systems get the same client.
type client struct {
	nc  net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	tag int
}

const ioTimeout = 10 * time.Minute // one command over 10,000 messages on a loaded machine

func dial(addr string) (*client, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), bw: bufio.NewWriterSize(nc, 64<<10)}
	_ = nc.SetDeadline(time.Now().Add(ioTimeout))
	line, err := c.readLine()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("greeting from %s: %w", addr, err)
	}
	if !strings.HasPrefix(line, "* OK") {
		nc.Close()
		return nil, fmt.Errorf("greeting from %s: %q", addr, line)
	}
	return c, nil
}

// login dials, logs in and selects INBOX.
func login(addr string) (*client, error) {
	c, err := dial(addr)
	if err != nil {
		return nil, err
	}
	if _, err := c.run("LOGIN " + quote(benchUser) + " " + quote(benchPass)); err != nil {
		c.close()
		return nil, err
	}
	if _, err := c.run("SELECT INBOX"); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *client) close() {
	_ = c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.run("LOGOUT")
	c.nc.Close()
}

// readLine reads one response line with any literals in it.
func (c *client) readLine() (string, error) {
	var out []byte
	for {
		line, err := c.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			out = append(out, line...)
			continue
		}
		if err != nil {
			return "", err
		}
		line = bytes.TrimRight(line, "\r\n")
		out = append(out, line...)
		// A literal: "{N}" at the end of the line, N bytes follow.
		if n := literalLen(line); n >= 0 {
			lit := make([]byte, n)
			if _, err := readFull(c.br, lit); err != nil {
				return "", err
			}
			out = append(out, lit...)
			continue
		}
		return string(out), nil
	}
}

func literalLen(line []byte) int {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return -1
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return -1
	}
	n, err := strconv.Atoi(string(line[i+1 : len(line)-1]))
	if err != nil {
		return -1
	}
	return n
}

func readFull(br *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := br.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *client) nextTag() string {
	c.tag++
	return "b" + strconv.Itoa(c.tag)
}

// run sends cmd and returns the untagged lines of its answer; a NO or BAD
// is an error holding the server's text.
func (c *client) run(cmd string) ([]string, error) {
	tag := c.nextTag()
	if _, err := c.bw.WriteString(tag + " " + cmd + "\r\n"); err != nil {
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return nil, err
	}
	return c.readTo(tag, cmd)
}

func (c *client) readTo(tag, cmd string) ([]string, error) {
	var lines []string
	for {
		line, err := c.readLine()
		if err != nil {
			return lines, fmt.Errorf("%s: %w", short(cmd), err)
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				return lines, fmt.Errorf("%s: %s", short(cmd), rest)
			}
			return lines, nil
		}
		lines = append(lines, line)
	}
}

// appendMsg APPENDs msg to mailbox with a synchronizing literal.
func (c *client) appendMsg(mailbox string, msg []byte) error {
	tag := c.nextTag()
	fmt.Fprintf(c.bw, "%s APPEND %s (\\Seen) {%d}\r\n", tag, quote(mailbox), len(msg))
	if err := c.bw.Flush(); err != nil {
		return err
	}
	line, err := c.readLine()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+") {
		return fmt.Errorf("APPEND: %s", line)
	}
	c.bw.Write(msg)
	c.bw.WriteString("\r\n")
	if err := c.bw.Flush(); err != nil {
		return err
	}
	_, err = c.readTo(tag, "APPEND")
	return err
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
