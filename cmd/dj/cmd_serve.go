package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"

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
			&cli.BoolFlag{Name: "no-auth", Usage: "serve without authentication (loopback addresses only, unless --insecure-no-auth)"},
			&cli.BoolFlag{Name: "insecure-no-auth", Usage: "serve without authentication on any address"},
			&cli.StringFlag{Name: "users-config", Usage: "per-user and per-repository append-only and quotas from the JSON `FILE` (read again when it changes)"},
			&cli.StringFlag{Name: "max-size", Usage: "refuse uploads that take the bytes under DIR above `SIZE` (like 500G, 2T)"},
		},
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			opts := rest.MultiOptions{
				Root:         c.String("path"),
				HtpasswdFile: c.String("htpasswd-file"),
				PrivateRepos: c.Bool("private-repos"),
				UsersConfig:  c.String("users-config"),
			}
			opts.AppendOnly = c.Bool("append-only")
			opts.Logf = func(f string, a ...any) { e.warnf("dj serve: "+f+"\n", a...) }
			noAuth := c.Bool("no-auth") || c.Bool("insecure-no-auth")
			switch {
			case noAuth && opts.HtpasswdFile != "":
				return usageError("--no-auth and --htpasswd-file exclude each other")
			case opts.PrivateRepos && opts.HtpasswdFile == "":
				return usageError("--private-repos needs users: give --htpasswd-file FILE")
			}
			if s := c.String("max-size"); s != "" {
				n, err := rest.ParseSize(s)
				if err != nil || n == 0 {
					return usageError("--max-size: invalid size %q (want a number with an optional K, M, G or T suffix)", s)
				}
				opts.MaxSize = n
			}
			h, err := rest.NewMultiServer(opts)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", c.String("listen"))
			if err != nil {
				return fmt.Errorf("listen on %s: %w", c.String("listen"), err)
			}
			if opts.HtpasswdFile == "" && !c.Bool("insecure-no-auth") {
				if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
					ln.Close()
					return usageError("refusing to serve without authentication on %s, which is not a loopback address: give --htpasswd-file FILE (or --insecure-no-auth)", ln.Addr())
				}
			}
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
			auth := "no authentication"
			if opts.HtpasswdFile != "" {
				auth = "users of " + opts.HtpasswdFile
				if opts.PrivateRepos {
					auth += ", private repositories"
				}
			}
			e.warnf("dj serve: serving %s on http://%s/ (%s, append-only %v)\n", c.String("path"), ln.Addr(), auth, opts.AppendOnly)
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
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
