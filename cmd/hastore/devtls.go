package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"hastore/replica/transport"
)

// devCreds returns the credentials `hastore dev` runs its cluster with,
// made once under dir: a cluster CA (dir/ca), one node credential for
// 127.0.0.1 and localhost that every dev node uses (dir/node) and an
// admin credential (dir/admin, what HASTORE_CRED points at). The dev
// cluster then runs the way a real one should: mutual TLS, no token on
// the wire.
func devCreds(dir string) (caDir, nodeDir, adminDir string, err error) {
	caDir, nodeDir, adminDir = filepath.Join(dir, "ca"), filepath.Join(dir, "node"), filepath.Join(dir, "admin")
	var ca *transport.CA
	if _, err := os.Stat(filepath.Join(caDir, transport.CAFile)); errors.Is(err, fs.ErrNotExist) {
		ca, err = transport.NewCA(caDir)
		if err != nil {
			return "", "", "", err
		}
	} else if ca, err = transport.LoadCA(caDir); err != nil {
		return "", "", "", err
	}
	for _, c := range []struct {
		dir string
		req transport.CredRequest
	}{
		{nodeDir, transport.CredRequest{Role: transport.RoleNode, Hosts: []string{"127.0.0.1", "localhost"}}},
		{adminDir, transport.CredRequest{Role: transport.RoleAdmin}},
	} {
		if _, err := os.Stat(filepath.Join(c.dir, transport.CertFile)); err == nil {
			continue
		}
		issued, err := ca.Issue(c.req)
		if err != nil {
			return "", "", "", err
		}
		if err := ca.WriteCredential(c.dir, issued); err != nil {
			return "", "", "", err
		}
	}
	return caDir, nodeDir, adminDir, nil
}
