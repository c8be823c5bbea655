package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dj/backend"
	"dj/backend/rest"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "serve repositories over HTTP (restic's REST protocol)",
		UsageText: "dj serve --path DIR [--listen ADDR] [--htpasswd-file FILE [--private-repos]] [--append-only] [--users-config FILE] [--max-size SIZE]",
		Description: `Serves the repositories under DIR to dj and restic clients over HTTP, using
restic's REST protocol (versions 1 and 2), as restic's rest-server does: one
repository per path (/r1/, /ann/laptop/, ...), created by a client's init; a
repository in DIR itself answers at /. Every upload is checked against its
SHA-256 name.

Users: --htpasswd-file names an htpasswd file (bcrypt, "htpasswd -B"); it is
read again when it changes, no restart needed. With --private-repos a user
reaches only the repositories under /<user>/ (others answer 403). Without
--htpasswd-file nobody is asked for a password: that is allowed only on a
loopback address (--no-auth says so explicitly), unless --insecure-no-auth.

Append-only: --append-only for everyone, or per user or repository in the
--users-config file: nothing but locks can be deleted, nothing overwritten,
so a compromised client cannot destroy backups.

HTTPS: --tls with --tls-cert and --tls-key (PEM files; without them
DIR/public_key and DIR/private_key, as rest-server has them), TLS 1.2 or later
(--tls-min-version 1.3 for later only). --listen unix:/run/dj.sock listens on a
Unix socket, for a reverse proxy in front. GET /healthz answers 200 "ok"
without authentication, for load balancers and monitoring. --prometheus serves
metrics at /metrics (requests, bytes in and out, latency histograms per
repository and user), for any user, or only the user "metrics" with
--private-repos, or anyone with --prometheus-no-auth. --access-log FILE writes
one JSON object per request (time, remote, user, repo, method, path, status,
bytes_in, bytes_out, seconds).

Quotas: --max-size bounds the bytes under DIR; the --users-config file bounds
users (the bytes under /<user>/) and repositories. An upload that would cross
a quota is refused with 507 Insufficient Storage and nothing is stored; the
client says "repository quota exceeded". Raising a quota in the file takes
effect without a restart.

The --users-config file is JSON:
   {
     "users": {"ann": {"append_only": true, "max_size": "10G"}},
     "repos": {"ann/laptop": {"max_size": "2G"}, "shared": {"append_only": true}}
   }

Examples:
   dj serve --path /srv/backup --listen 127.0.0.1:8000
   dj -r rest:http://127.0.0.1:8000/ snapshots

   htpasswd -B -c /etc/dj/htpasswd ann
   dj serve --path /srv/backup --listen :8000 --htpasswd-file /etc/dj/htpasswd --private-repos
   dj -r rest:http://ann:secret@backup-host:8000/ann/laptop init
   restic -r rest:http://ann:secret@backup-host:8000/ann/laptop backup ~

   dj serve --path /srv/backup --listen :8000 --htpasswd-file /etc/dj/htpasswd \
      --private-repos --users-config /etc/dj/users.json --max-size 2T`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "path", Required: true, Usage: "serve the repositories under `DIR`"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8000", Usage: "listen on `ADDR`"},
			&cli.BoolFlag{Name: "append-only", Usage: "refuse deletions except of locks, and overwrites, for everyone"},
			&cli.StringFlag{Name: "htpasswd-file", Aliases: []string{"htpasswd"}, Usage: "require basic auth with the users in `FILE` (bcrypt, {SHA} or plain; read again when it changes)"},
			&cli.BoolFlag{Name: "private-repos", Usage: "let each user reach only the repositories under /USER/"},
			&cli.StringFlag{Name: "proxy-auth-username", Usage: "take the user name from the request header `HEADER`, set by an authenticating reverse proxy (the server must be reachable only through it)"},
			&cli.BoolFlag{Name: "group-accessible-repos", Usage: "let the group of the repositories' files read them, and write their directories (as rest-server)"},
			&cli.BoolFlag{Name: "no-auth", Usage: "serve without authentication (loopback addresses only, unless --insecure-no-auth)"},
			&cli.BoolFlag{Name: "insecure-no-auth", Usage: "serve without authentication on any address"},
			&cli.StringFlag{Name: "users-config", Usage: "per-user and per-repository append-only and quotas from the JSON `FILE` (read again when it changes)"},
			&cli.StringFlag{Name: "max-size", Usage: "refuse uploads that take the bytes under DIR above `SIZE` (like 500G, 2T)"},
			&cli.BoolFlag{Name: "prometheus", Usage: "serve Prometheus metrics at /metrics (requests, bytes, latency per repository and user)"},
			&cli.BoolFlag{Name: "prometheus-no-auth", Usage: "serve /metrics without authentication"},
			&cli.StringFlag{Name: "access-log", Usage: "write one JSON line per request to `FILE` (appended; - for standard error)"},
			&cli.BoolFlag{Name: "tls", Usage: "serve HTTPS (certificate and key from --tls-cert and --tls-key)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "TLS certificate (PEM) `FILE`; default DIR/public_key as in rest-server"},
			&cli.StringFlag{Name: "tls-key", Usage: "TLS private key (PEM) `FILE`; default DIR/private_key as in rest-server"},
			&cli.StringFlag{Name: "tls-client-ca", Usage: "with --tls, accept only clients presenting a certificate signed by a CA in PEM `FILE`"},
			&cli.StringFlag{Name: "tls-min-version", Value: "1.2", Usage: "lowest TLS `VERSION` accepted: 1.2 or 1.3"},
		},
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			opts := rest.MultiOptions{
				Root:         c.String("path"),
				HtpasswdFile: c.String("htpasswd-file"),
				PrivateRepos: c.Bool("private-repos"),
				UsersConfig:  c.String("users-config"),
				Metrics:      c.Bool("prometheus"),
			}
			opts.ProxyAuthHeader = c.String("proxy-auth-username")
			opts.GroupAccessible = c.Bool("group-accessible-repos")
			opts.MetricsNoAuth = c.Bool("prometheus-no-auth")
			if opts.MetricsNoAuth && !opts.Metrics {
				return usageError("--prometheus-no-auth needs --prometheus")
			}
			opts.AppendOnly = c.Bool("append-only")
			opts.UploadIdleTimeout = backend.StallTimeout(e.ctx, 0) // shortened only in the test mode
			opts.Logf = func(f string, a ...any) { e.warnf("dj serve: "+f+"\n", a...) }
			noAuth := c.Bool("no-auth") || c.Bool("insecure-no-auth")
			switch {
			case noAuth && opts.HtpasswdFile != "":
				return usageError("--no-auth and --htpasswd-file exclude each other")
			case noAuth && opts.ProxyAuthHeader != "":
				return usageError("--no-auth and --proxy-auth-username exclude each other")
			case opts.PrivateRepos && opts.HtpasswdFile == "" && opts.ProxyAuthHeader == "":
				return usageError("--private-repos needs users: give --htpasswd-file FILE")
			}
			if s := c.String("max-size"); s != "" {
				n, err := rest.ParseSize(s)
				if err != nil || n == 0 {
					return usageError("--max-size: invalid size %q (want a number with an optional K, M, G or T suffix)", s)
				}
				opts.MaxSize = n
			}
			switch f := c.String("access-log"); f {
			case "":
			case "-":
				opts.AccessLog = os.Stderr
			default:
				lf, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
				if err != nil {
					return fmt.Errorf("open access log: %w", err)
				}
				defer lf.Close()
				opts.AccessLog = lf
			}
			h, err := rest.NewMultiServer(opts)
			if err != nil {
				return err
			}
			tlsConf, certFile, keyFile, err := serveTLS(c)
			if err != nil {
				return err
			}
			ln, err := serveListen(c.String("listen"))
			if err != nil {
				return err
			}
			if opts.HtpasswdFile == "" && opts.ProxyAuthHeader == "" && !c.Bool("insecure-no-auth") {
				if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() {
					ln.Close()
					return usageError("refusing to serve without authentication on %s, which is not a loopback address: give --htpasswd-file FILE (or --insecure-no-auth)", ln.Addr())
				}
			}
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, TLSConfig: tlsConf}
			auth := "no authentication"
			if opts.ProxyAuthHeader != "" {
				auth = "users named by the proxy's " + opts.ProxyAuthHeader + " header"
			}
			if opts.HtpasswdFile != "" {
				auth = "users of " + opts.HtpasswdFile
				if opts.PrivateRepos {
					auth += ", private repositories"
				}
			}
			scheme := "http"
			if tlsConf != nil {
				scheme = "https"
			}
			e.warnf("dj serve: serving %s on %s://%s/ (%s, append-only %v)\n", c.String("path"), scheme, ln.Addr(), auth, opts.AppendOnly)
			errc := make(chan error, 1)
			go func() {
				if tlsConf != nil {
					errc <- srv.ServeTLS(ln, certFile, keyFile)
				} else {
					errc <- srv.Serve(ln)
				}
			}()
			select {
			case err := <-errc:
				if tlsConf != nil {
					return fmt.Errorf("serve HTTPS: %w", err)
				}
				return err
			case <-e.ctx.Done():
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			e.warnf("dj serve: stopped\n")
			return nil
		},
	}
}

// serveListen listens on addr: "unix:PATH" for a Unix socket (a stale
// socket file is replaced), host:port otherwise.
func serveListen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
			_ = os.Remove(path)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// serveTLS reads the TLS flags: nil without --tls; otherwise the
// configuration and the certificate and key files, checked to load.
func serveTLS(c *cli.Context) (*tls.Config, string, string, error) {
	if !c.Bool("tls") {
		if c.String("tls-cert") != "" || c.String("tls-key") != "" || c.String("tls-client-ca") != "" {
			return nil, "", "", usageError("--tls-cert, --tls-key and --tls-client-ca need --tls")
		}
		return nil, "", "", nil
	}
	cert, key := c.String("tls-cert"), c.String("tls-key")
	if cert == "" {
		cert = filepath.Join(c.String("path"), "public_key")
	}
	if key == "" {
		key = filepath.Join(c.String("path"), "private_key")
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		return nil, "", "", fmt.Errorf("load TLS certificate %s and key %s: %w", cert, key, err)
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	switch v := c.String("tls-min-version"); v {
	case "1.2":
	case "1.3":
		conf.MinVersion = tls.VersionTLS13
	default:
		return nil, "", "", usageError("--tls-min-version: %q is not 1.2 or 1.3", v)
	}
	if f := c.String("tls-client-ca"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, "", "", fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, "", "", usageError("--tls-client-ca %s: no PEM certificate in the file", f)
		}
		conf.ClientCAs, conf.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return conf, cert, key, nil
}
