package layering

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// frontendWords are the words of mail and web concepts. The replication
// layer applies opaque commands of plug-in command sets (replica/meta's
// CommandSet); the moment one of its identifiers says "mailbox" or "inode"
// again, a frontend's state machine has crept back into it.
//
// "site" is not listed: replica/transport scopes mount credentials by site
// name, a cluster-access concept that stays there.
var frontendWords = []string{"mail", "imap", "smtp", "lmtp", "inode", "webfs", "fuse", "dkim", "sieve"}

// TestReplicaNamesNoFrontendConcept fails if a non-test Go file under
// replica/ has an identifier (declared or used: types, functions, fields,
// variables, constants, package names) with a word starting with one of
// frontendWords. Comments and string literals are not checked: a comment
// may say which feature a generic mechanism serves, and an operator-facing
// message may say what crosses the network. Names selected from the
// generated protobuf package (hastore/proto/...) are not checked either.
func TestReplicaNamesNoFrontendConcept(t *testing.T) {
	root := filepath.Join("..", "..", "replica")
	checked := 0
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		// Names taken from the generated protobuf package are the wire edge,
		// not replica's vocabulary: the transport's call policy must name
		// the mail RPC that nodes make to each other.
		generated := map[string]bool{}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, "hastore/proto/") && imp.Name != nil {
				generated[imp.Name.Name] = true
			} else if strings.HasPrefix(p, "hastore/proto/") {
				generated[p[strings.LastIndexByte(p, '/')+1:]] = true
			}
		}
		skip := map[*ast.Ident]bool{}
		seen := map[string]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok && generated[x.Name] {
					skip[sel.Sel] = true
				}
			}
			id, ok := n.(*ast.Ident)
			if !ok || seen[id.Name] || skip[id] {
				return true
			}
			if w := frontendWord(id.Name); w != "" {
				seen[id.Name] = true
				t.Errorf("%s: identifier %s names a frontend concept (%q): replica applies opaque commands; move it to the frontend's command set", fset.Position(id.Pos()), id.Name, w)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("only %d Go files checked under %s: wrong root?", checked, root)
	}
}

// frontendWord returns the forbidden word an identifier contains, "" if
// none. Identifiers are split into words at case changes, digits and
// underscores ("MailDeliver" → mail, deliver; "IMAPServer" → imap,
// server), so "refuse" is not "fuse".
func frontendWord(name string) string {
	for _, w := range words(name) {
		for _, f := range frontendWords {
			if strings.HasPrefix(w, f) {
				return f
			}
		}
	}
	return ""
}

func words(s string) []string {
	var out []string
	r := []rune(s)
	start := 0
	flush := func(i int) {
		if i > start {
			out = append(out, strings.ToLower(string(r[start:i])))
		}
		start = i
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case c == '_' || unicode.IsDigit(c):
			flush(i)
			start = i + 1
		case unicode.IsUpper(c) && i > start:
			prevLower := unicode.IsLower(r[i-1])
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if prevLower || (unicode.IsUpper(r[i-1]) && nextLower) {
				flush(i)
			}
		}
	}
	flush(len(r))
	return out
}

func TestFrontendWord(t *testing.T) {
	for name, want := range map[string]string{
		"MailDeliver": "mail", "IMAPServer": "imap", "applyMail": "mail", "mailTxn": "mail",
		"TypeMailboxCreate": "mail", "inodeKey": "inode", "refuse": "", "Refused": "", "tenantKey": "",
		"maxMailUIDs": "mail", "SMTP2": "smtp", "email": "", "unused_fuse_x": "fuse",
	} {
		if got := frontendWord(name); got != want {
			t.Errorf("frontendWord(%q) = %q, want %q", name, got, want)
		}
	}
}
