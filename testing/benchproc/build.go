package benchproc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot returns the directory of hastore's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the hastore module (run from its tree)")
	}
	return filepath.Dir(mod), nil
}

// Pprof selects the pprof hook [BuildHastore] compiles into the binary.
type Pprof int

const (
	NoPprof         Pprof = iota // no hook
	PprofPlain                   // net/http/pprof only
	PprofContention              // also mutex and block profiling
)

// pprofHook is compiled into the hastore binary (through go build -overlay,
// so the source tree is untouched) when asked: it serves net/http/pprof on
// the address in HASTORE_BENCH_PPROF. %s holds the extra imports and
// initialisation of PprofContention.
const pprofHook = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
%s)

func init() {
	addr := os.Getenv("HASTORE_BENCH_PPROF")
	if addr == "" {
		return
	}
%s	go func() { _ = http.ListenAndServe(addr, nil) }()
}
`

func hookSource(mode Pprof) string {
	if mode == PprofContention {
		return fmt.Sprintf(pprofHook, "\t\"runtime\"\n",
			"\truntime.SetMutexProfileFraction(10)\n\truntime.SetBlockProfileRate(100000) // one sample per 100µs blocked\n")
	}
	return fmt.Sprintf(pprofHook, "", "")
}

// BuildHastore builds cmd/hastore into dir/hastore, with the pprof hook
// selected by mode, and returns the binary's path.
func BuildHastore(dir string, mode Pprof) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "hastore")
	args := []string{"build", "-o", bin}
	if mode != NoPprof {
		file := "zz_" + name + "_pprof.go"
		hook := filepath.Join(dir, file)
		if err := os.WriteFile(hook, []byte(hookSource(mode)), 0o600); err != nil {
			return "", err
		}
		ov, _ := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(root, "cmd", "hastore", file): hook}})
		ovFile := filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(ovFile, ov, 0o600); err != nil {
			return "", err
		}
		args = append(args, "-overlay", ovFile)
	}
	args = append(args, "./cmd/hastore")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// FetchPprof saves a profile from a pprof server at addr to path; query is
// e.g. "profile?seconds=3" (CPU) or "mutex?seconds=3" (a delta over 3 s).
func FetchPprof(ctx context.Context, addr, query, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/debug/pprof/"+query, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("pprof %s %s: %s: %s", addr, query, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
