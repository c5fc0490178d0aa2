package imapconf

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Script is one parsed script file.
type Script struct {
	Name  string // file name without .txt
	File  string
	Quota string
	Steps []Step
	Msgs  map[string][]byte
}

// StepKind says what a Step does.
type StepKind int

const (
	StepCmd  StepKind = iota // send a command, check its responses
	StepConn                 // open a connection
	StepUse                  // switch connections
	StepWait                 // read until a line matches
)

// Step is one directive of a script.
type Step struct {
	Kind   StepKind
	Line   int    // line number in the file
	Text   string // C: text, W: pattern
	Conn   string
	Node   int
	Expect []Pattern // S: lines
	Forbid []Pattern // !S: lines
	Known  string    // reason from "# KNOWN:", if any
}

// Pattern is one S:, !S: or W: pattern, with its line number.
type Pattern struct {
	Line int
	Src  string
}

// ParseFile reads one script.
func ParseFile(path string) (*Script, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := Parse(f, filepath.Base(path))
	if err != nil {
		return nil, err
	}
	s.File = path
	return s, nil
}

// Parse reads a script; name is used in errors.
func Parse(r io.Reader, name string) (*Script, error) {
	s := &Script{Name: strings.TrimSuffix(name, ".txt"), File: name, Msgs: map[string][]byte{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	var known string
	var cur *Step // the last C: step, which S: lines belong to
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s:%d: %s", name, n, fmt.Sprintf(format, a...))
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		trim := strings.TrimSpace(line)
		switch {
		case trim == "":
			continue
		case strings.HasPrefix(trim, "#"):
			if r, ok := strings.CutPrefix(strings.TrimSpace(trim[1:]), "KNOWN:"); ok {
				known = strings.TrimSpace(r)
				if known == "" {
					return nil, bad("KNOWN needs a reason")
				}
			}
			continue
		case strings.HasPrefix(line, "C: "):
			s.Steps = append(s.Steps, Step{Kind: StepCmd, Line: n, Text: line[3:], Known: known})
			known = ""
			cur = &s.Steps[len(s.Steps)-1]
		case strings.HasPrefix(line, "S: "), strings.HasPrefix(line, "!S: "):
			if cur == nil {
				return nil, bad("S: line before any C: line")
			}
			if _, err := compile(pat(line), nil, nil); err != nil {
				return nil, bad("%v", err)
			}
			if strings.HasPrefix(line, "!") {
				cur.Forbid = append(cur.Forbid, Pattern{n, line[4:]})
			} else {
				cur.Expect = append(cur.Expect, Pattern{n, line[3:]})
			}
		case strings.HasPrefix(line, "W: "):
			if _, err := compile(line[3:], nil, nil); err != nil {
				return nil, bad("%v", err)
			}
			s.Steps = append(s.Steps, Step{Kind: StepWait, Line: n, Text: line[3:], Known: known})
			known = ""
			cur = nil
		case strings.HasPrefix(trim, "CONN "):
			f := strings.Fields(trim)
			node, err := strconv.Atoi(f[len(f)-1])
			if len(f) != 3 || err != nil || node < 0 || node > 2 {
				return nil, bad("want CONN name node (node 0, 1 or 2)")
			}
			s.Steps = append(s.Steps, Step{Kind: StepConn, Line: n, Conn: f[1], Node: node})
			cur = nil
		case strings.HasPrefix(trim, "USE "):
			f := strings.Fields(trim)
			if len(f) != 2 {
				return nil, bad("want USE name")
			}
			s.Steps = append(s.Steps, Step{Kind: StepUse, Line: n, Conn: f[1]})
			cur = nil
		case strings.HasPrefix(trim, "QUOTA "):
			if len(s.Steps) > 0 {
				return nil, bad("QUOTA must come before the first command")
			}
			s.Quota = strings.TrimSpace(trim[6:])
		case strings.HasPrefix(trim, "MSG "):
			f := strings.Fields(trim)
			if len(f) < 2 || len(f) > 3 || (len(f) == 3 && f[2] != "lf") {
				return nil, bad("want MSG name [lf]")
			}
			eol := "\r\n"
			if len(f) == 3 {
				eol = "\n"
			}
			start := n
			var b strings.Builder
			closed := false
			for sc.Scan() {
				n++
				l := sc.Text()
				if l == "." {
					closed = true
					break
				}
				b.WriteString(strings.TrimPrefix(l, ".")) // dot-stuffed, as in SMTP
				b.WriteString(eol)
			}
			if !closed {
				n = start
				return nil, bad("MSG %s has no closing \".\" line", f[1])
			}
			s.Msgs[f[1]] = []byte(b.String())
		default:
			return nil, bad("unknown line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if known != "" {
		return nil, bad("KNOWN at the end of the script, with no exchange after it")
	}
	return s, nil
}

func pat(line string) string {
	if strings.HasPrefix(line, "!") {
		return line[4:]
	}
	return line[3:]
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+(?::[A-Za-z0-9_.-]+)?)\}`)

// lookup finds a variable: a captured or built-in one, or SIZE:/MSG: of a
// message. vars nil means "parsing only": any name will do.
func lookup(name string, vars map[string]string, msgs map[string][]byte) (string, error) {
	if vars == nil {
		return "x", nil
	}
	if kind, m, ok := strings.Cut(name, ":"); ok {
		b, found := msgs[m]
		if !found {
			return "", fmt.Errorf("no MSG %s", m)
		}
		switch kind {
		case "SIZE":
			return strconv.Itoa(len(b)), nil
		case "MSG":
			return string(b), nil
		}
		return "", fmt.Errorf("unknown variable %s", name)
	}
	v, ok := vars[name]
	if !ok {
		return "", fmt.Errorf("variable %s is not set (yet)", name)
	}
	return v, nil
}

// compile turns a pattern into an anchored, case-insensitive regexp with
// ... as any text, {{re}} and {{NAME=re}} as regexps (the latter
// capturing) and ${NAME} as a variable's value.
func compile(src string, vars map[string]string, msgs map[string][]byte) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString(`(?is)^`)
	for i := 0; i < len(src); {
		switch {
		case strings.HasPrefix(src[i:], "..."):
			b.WriteString(`.*`)
			i += 3
		case strings.HasPrefix(src[i:], "{{"):
			end := strings.Index(src[i+2:], "}}")
			if end < 0 {
				return nil, fmt.Errorf("unclosed {{ in %q", src)
			}
			body := src[i+2 : i+2+end]
			if name, re, ok := strings.Cut(body, "="); ok && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(name) {
				fmt.Fprintf(&b, `(?P<%s>%s)`, name, re)
			} else {
				fmt.Fprintf(&b, `(?:%s)`, body)
			}
			i += 2 + end + 2
		case strings.HasPrefix(src[i:], "${"):
			loc := varRef.FindStringSubmatchIndex(src[i:])
			if loc == nil || loc[0] != 0 {
				return nil, fmt.Errorf("bad ${...} in %q", src)
			}
			v, err := lookup(src[i+loc[2]:i+loc[3]], vars, msgs)
			if err != nil {
				return nil, err
			}
			b.WriteString(regexp.QuoteMeta(v))
			i += loc[1]
		default:
			b.WriteString(regexp.QuoteMeta(src[i : i+1]))
			i++
		}
	}
	b.WriteString(`$`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %v", src, err)
	}
	return re, nil
}

// expand replaces ${NAME} in a command line.
func expand(s string, vars map[string]string, msgs map[string][]byte) (string, error) {
	var err error
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		v, e := lookup(m[2:len(m)-1], vars, msgs)
		if e != nil && err == nil {
			err = e
		}
		return v
	})
	return out, err
}

// Segment is a piece of a command: text, or a literal.
type Segment struct {
	Text    string
	Literal []byte
	IsLit   bool
	NonSync bool // LITERAL+
	Binary  bool // literal8, ~{n} (RFC 3516)
}

var litRef = regexp.MustCompile(`\{(MSG|LIT|BIN)(\+?):([^}]*)\}`)

// segments splits a (variable-expanded) command line at its literals.
func segments(line string, msgs map[string][]byte) ([]Segment, error) {
	var out []Segment
	last := 0
	for _, m := range litRef.FindAllStringSubmatchIndex(line, -1) {
		out = append(out, Segment{Text: line[last:m[0]]})
		arg := line[m[6]:m[7]]
		kind := line[m[2]:m[3]]
		seg := Segment{IsLit: true, NonSync: m[5] > m[4], Binary: kind == "BIN"}
		if kind != "LIT" {
			b, ok := msgs[arg]
			if !ok {
				return nil, fmt.Errorf("no MSG %s", arg)
			}
			seg.Literal = b
		} else {
			seg.Literal = []byte(arg)
		}
		out = append(out, seg)
		last = m[1]
	}
	return append(out, Segment{Text: line[last:]}), nil
}
