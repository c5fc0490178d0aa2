package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"hastore/replica/transport"
)

// devClusterCert returns the certificate and key `hastore dev` puts its
// cluster port under, made once in dir: a self-signed certificate for
// 127.0.0.1 and localhost that is also the CA clients trust
// (--tls-ca / HASTORE_TLS_CA). With it the cluster token never crosses
// even the loopback in clear, and the dev cluster runs the way a real one
// should.
func devClusterCert(dir string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, "cluster-cert.pem")
	keyFile = filepath.Join(dir, "cluster-cert.key")
	_, errC := os.Stat(certFile)
	_, errK := os.Stat(keyFile)
	if errC == nil && errK == nil {
		return certFile, keyFile, nil
	}
	if !errors.Is(errC, fs.ErrNotExist) && errC != nil {
		return "", "", errC
	}
	certPEM, keyPEM, err := transport.SelfSignedCert("127.0.0.1", "localhost")
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
