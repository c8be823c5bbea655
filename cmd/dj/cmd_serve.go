package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"

	"dj/backend/local"
	"dj/backend/rest"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "serve repositories over HTTP (restic's REST protocol)",
		UsageText: "dj serve --path DIR [--listen ADDR] [--append-only] [--htpasswd FILE]",
		Description: `Serves the repository in DIR to dj (and restic) clients over HTTP, using
restic's REST protocol. Every upload is checked against its SHA-256 name. With
--append-only, nothing but locks can be deleted, so a compromised client cannot
destroy backups. Clients use -r rest:http://HOST:PORT/.

Examples:
   dj serve --path /srv/backup --listen 127.0.0.1:8000
   dj -r rest:http://user:secret@backup-host:8000/ snapshots`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "path", Required: true, Usage: "serve the repository in `DIR` (created by the first client's init)"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8000", Usage: "listen on `ADDR`"},
			&cli.BoolFlag{Name: "append-only", Usage: "refuse deletions except of locks"},
			&cli.StringFlag{Name: "htpasswd", Usage: "require basic auth with the users in `FILE` (bcrypt, {SHA} or plain)"},
		},
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			l := local.New(c.String("path"))
			opts := rest.ServerOptions{Init: l.Init, AppendOnly: c.Bool("append-only"),
				Logf: func(f string, a ...any) { e.warnf("dj serve: "+f+"\n", a...) }}
			if f := c.String("htpasswd"); f != "" {
				users, err := rest.LoadHtpasswd(f)
				if err != nil {
					return err
				}
				opts.Users = users
			}
			ln, err := net.Listen("tcp", c.String("listen"))
			if err != nil {
				return fmt.Errorf("listen on %s: %w", c.String("listen"), err)
			}
			srv := &http.Server{Handler: rest.NewServer(l, opts), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
			e.warnf("dj serve: serving %s on http://%s/ (append-only %v)\n", c.String("path"), ln.Addr(), opts.AppendOnly)
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
