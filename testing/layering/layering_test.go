// Package layering checks that data flows one way through hastore:
// frontends → replica → storage, with generated protobuf code at the edges,
// and that replica names no mail or web concept (concepts_test.go).
package layering

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// forbidden lists, per package directory (and everything below it), the
// import path prefixes it must never use.
var forbidden = map[string][]string{
	"storage":           {"hastore/replica", "hastore/mailserver", "hastore/webfs", "hastore/proto", "hastore/cmd", "google.golang.org/grpc", "github.com/hashicorp/raft"},
	"replica":           {"hastore/mailserver", "hastore/webfs", "hastore/cmd", "hastore/testing"},
	"replica/meta":      {"hastore/proto", "google.golang.org/grpc", "hastore/replica/transport"},
	"replica/placement": {"hastore/"},
	"proto":             {"hastore/replica", "hastore/storage", "hastore/mailserver", "hastore/webfs"},
	"mailserver":        {"hastore/webfs", "hastore/cmd", "hastore/storage"},
	"webfs":             {"hastore/mailserver", "hastore/cmd", "hastore/storage"},
}

func TestLayering(t *testing.T) {
	root := filepath.Join("..", "..")
	checked := 0
	for dir, bad := range forbidden {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
			if os.IsNotExist(err) {
				return filepath.SkipDir // a layer not written yet
			}
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			checked++
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				for _, b := range bad {
					if p == strings.TrimSuffix(b, "/") || strings.HasPrefix(p, b) && (strings.HasSuffix(b, "/") || strings.HasPrefix(p[len(b):], "/") || len(p) == len(b)) {
						t.Errorf("%s imports %s: %s must not depend on it (frontends → replica → storage)", path, p, dir)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked == 0 {
		t.Fatal("no Go files checked: wrong root?")
	}
}
