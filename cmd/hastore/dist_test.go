//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// distUnits are the systemd units shipped in dist/, each shown in full in
// docs/operations.md.
var distUnits = []string{"hastore.service", "hastore-mount@.service"}

// TestSystemdUnitsMatchDocs: the units in dist/ are the ones
// docs/operations.md shows, byte for byte, so an operator copying either
// gets the same.
func TestSystemdUnitsMatchDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```ini\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	for _, name := range distUnits {
		unit, err := os.ReadFile(filepath.Join("../../dist", name))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, b := range blocks {
			if b[1] == string(unit) {
				found = true
			}
		}
		if !found {
			t.Errorf("dist/%s is not shown as is in docs/operations.md (change both)", name)
		}
	}
}

// TestSystemdUnitsVerify runs `systemd-analyze verify` on the units of
// dist/ (with ExecStart's binary present) and checks the options the
// service depends on: Type=notify, the one capability to bind low ports,
// and the hardening.
func TestSystemdUnitsVerify(t *testing.T) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: the units in dist/ are not verified")
	}
	self, err := os.Executable() // an executable file for ExecStart to name
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var paths []string
	for _, name := range distUnits {
		b, err := os.ReadFile(filepath.Join("../../dist", name))
		if err != nil {
			t.Fatal(err)
		}
		unit := string(b)
		if !strings.Contains(unit, "/usr/local/bin/hastore ") {
			t.Fatalf("dist/%s: ExecStart does not run /usr/local/bin/hastore", name)
		}
		unit = strings.ReplaceAll(unit, "/usr/local/bin/hastore ", self+" ")
		if err := os.WriteFile(filepath.Join(dir, name), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if strings.HasSuffix(name, "@.service") {
			// A template is verified as one of its instances.
			path = filepath.Join(dir, strings.Replace(name, "@", "@www.example.com", 1))
			if err := os.Symlink(name, path); err != nil {
				t.Fatal(err)
			}
		}
		paths = append(paths, path)
	}
	cmd := exec.Command(tool, append([]string{"verify", "--man=no"}, paths...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
	out, err := cmd.CombinedOutput()
	// Lines about the units themselves are findings; others are about
	// the host (units it lacks, such as nginx.service named by Before=).
	var findings []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, dir) || strings.Contains(line, "hastore") {
			findings = append(findings, line)
		}
	}
	if err != nil || len(findings) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	node, _ := os.ReadFile(filepath.Join(dir, "hastore.service"))
	for _, opt := range []string{"Type=notify", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/hastore", "PrivateTmp=yes", "ProtectHome=yes",
		"ExecReload=/bin/kill -HUP $MAINPID", "LimitNOFILE="} {
		if !strings.Contains(string(node), "\n"+opt) {
			t.Errorf("dist/hastore.service lacks %s", opt)
		}
	}
}
