package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startServeTLS starts `dj serve --tls` with a self-signed certificate
// and the extra flags, and returns the rest: location of repository r1 and
// the certificate's file.
func startServeTLS(e *env, extra ...string) (repo, certFile string) {
	e.t.Helper()
	certFile, keyFile, _ := selfSigned(e.t, e.dir)
	addr := freePort(e.t)
	args := append([]string{"--path", filepath.Join(e.dir, "served"), "--listen", addr, "--tls", "--tls-cert", certFile, "--tls-key", keyFile}, extra...)
	startServeWith(e, func() bool {
		// Any TLS answer, even a refused handshake, says the server listens.
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}).Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil || strings.Contains(err.Error(), "tls")
	}, args...)
	return "rest:https://" + addr + "/r1", certFile
}

// TestServeTLSClient: dj's client against `dj serve --tls` with a
// self-signed certificate: --cacert trusts it for init, backup, check and
// restore; without it the one-line error names the location and suggests
// --cacert; --insecure-tls works without it.
func TestServeTLSClient(t *testing.T) {
	e := newEnv(t)
	repo, certFile := startServeTLS(e)
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY="+repo)
	src := filepath.Join(e.dir, "src")
	data := randomFile(t, filepath.Join(src, "f"), 300_000, 7)

	e.must("--cacert", certFile, "init")
	e.must("--cacert", certFile, "backup", src)
	if out := e.must("--cacert", certFile, "check", "--read-data"); !strings.Contains(out, "no errors were found") {
		t.Fatalf("check over TLS: %s", out)
	}
	target := filepath.Join(e.dir, "restored")
	e.must("--cacert", certFile, "restore", "latest", "--target", target)
	if got, err := os.ReadFile(filepath.Join(target, src, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("restore over TLS: %d bytes, %v", len(got), err)
	}
	// DJ_CACERT as the flag.
	if out := e.runEnv([]string{"DJ_CACERT=" + certFile}, "snapshots", "--json"); out.code != 0 || strings.Count(out.stdout, `"tree"`) != 1 {
		t.Fatalf("snapshots with DJ_CACERT: exit %d\n%s%s", out.code, out.stdout, out.stderr)
	}

	start := time.Now()
	r := e.run("snapshots")
	if r.code != 22 {
		t.Fatalf("a self-signed server without --cacert: exit %d, want 22 (the server's identity is not confirmed)\n%s", r.code, r.stderr)
	}
	oneLine(t, r)
	t.Logf("without --cacert: exit %d: %s", r.code, r.stderr)
	if !strings.Contains(r.stderr, strings.TrimPrefix(repo, "rest:")) || !strings.Contains(r.stderr, "--cacert") || !strings.Contains(r.stderr, "not trusted") {
		t.Errorf("untrusted certificate: want the location, 'not trusted' and --cacert in:\n%s", r.stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("an untrusted certificate was retried for %v", d)
	}

	if out := e.must("--insecure-tls", "snapshots", "--json"); strings.Count(out, `"tree"`) != 1 {
		t.Fatalf("snapshots with --insecure-tls: %s", out)
	}

	// Bad flag values: one line each.
	for _, args := range [][]string{
		{"--cacert", filepath.Join(e.dir, "nope.pem"), "snapshots"},
		{"--cacert", filepath.Join(e.dir, "password"), "snapshots"},
		{"--cacert", certFile, "--tls-client-cert", certFile, "snapshots"}, // no key in it
	} {
		r := e.run(args...)
		if r.code == 0 {
			t.Errorf("dj %v: exit 0", args)
			continue
		}
		oneLine(t, r)
	}
}

// TestServeTLSClientCert: `dj serve --tls --tls-client-ca` admits only
// clients presenting a certificate its CA signed; dj's --tls-client-cert
// (certificate and key in one PEM file, as restic takes it) gets through,
// and restic 0.14's as well.
func TestServeTLSClientCert(t *testing.T) {
	e := newEnv(t)
	clientPEM, clientCA := clientCertificate(t, e.dir)
	repo, certFile := startServeTLS(e, "--tls-client-ca", clientCA)
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY="+repo)
	src := filepath.Join(e.dir, "src")
	randomFile(t, filepath.Join(src, "f"), 100_000, 8)

	r := e.run("--cacert", certFile, "init")
	// With TLS 1.3 the server's alert arrives after the client's first
	// write; that write may already fail with a broken pipe, which says
	// nothing of certificates. When the alert is read, the exit code is 21.
	if r.code == 0 {
		t.Fatal("init without a client certificate was accepted")
	}
	if strings.Contains(r.stderr, "certificate required") && (r.code != 21 || !strings.Contains(r.stderr, "--tls-client-cert")) {
		t.Errorf("init without a client certificate: exit %d, want 21 and a hint of --tls-client-cert\n%s", r.code, r.stderr)
	}
	oneLine(t, r)
	t.Logf("without a client certificate: exit %d: %s", r.code, r.stderr)

	e.must("--cacert", certFile, "--tls-client-cert", clientPEM, "init")
	e.must("--cacert", certFile, "--tls-client-cert", clientPEM, "backup", src)
	if out := e.must("--cacert", certFile, "--tls-client-cert", clientPEM, "check"); !strings.Contains(out, "no errors were found") {
		t.Fatalf("check with a client certificate: %s", out)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "served", "r1", "config")); err != nil {
		t.Fatalf("the repository is not on the server: %v", err)
	}

	if testing.Short() {
		return
	}
	requireRestic(t)
	r2, r3 := strings.TrimSuffix(repo, "r1")+"r2", strings.TrimSuffix(repo, "r1")+"r3"
	resticMust(e, r2, "--cacert", certFile, "--tls-client-cert", clientPEM, "init")
	if _, err := os.Stat(filepath.Join(e.dir, "served", "r2", "config")); err != nil {
		t.Errorf("restic with --tls-client-cert did not create its repository: %v", err)
	}
	if out, err := serveRestic(e, r3, "--cacert", certFile, "init"); err == nil {
		t.Errorf("restic without a client certificate was accepted:\n%s", out)
	}
}

// clientCertificate writes a self-signed client certificate with its key
// in one PEM file (as --tls-client-cert takes it) and the certificate
// alone (the CA for --tls-client-ca).
func clientCertificate(t *testing.T, dir string) (pemFile, caFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "dj client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	pemFile, caFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-ca.pem")
	writeFile(t, pemFile, append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})...))
	writeFile(t, caFile, certPEM)
	return pemFile, caFile
}
