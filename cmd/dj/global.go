package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"dj/backend"
	"dj/backend/local"
	"dj/backend/location"
	"dj/backend/rest"
	"dj/backend/retry"
	"dj/cache"
	"dj/repo"
	"dj/repo/archiver"
	"dj/repo/crypto"
	"dj/repo/snapshot"
)

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "repo", Aliases: []string{"r"}, EnvVars: []string{"DJ_REPOSITORY"}, Usage: "repository `LOCATION`: a directory, rest:http://host:port/ for `dj serve`, or sftp:[user@]host:/path"},
		&cli.StringFlag{Name: "repository-file", EnvVars: []string{"DJ_REPOSITORY_FILE"}, Usage: "read the repository location from `FILE`"},
		&cli.StringFlag{Name: "password-file", Aliases: []string{"p"}, EnvVars: []string{"DJ_PASSWORD_FILE"}, Usage: "read the password from `FILE`"},
		&cli.StringFlag{Name: "password-command", EnvVars: []string{"DJ_PASSWORD_COMMAND"}, Usage: "run `COMMAND` and use its output as the password"},
		&cli.StringFlag{Name: "cache-dir", EnvVars: []string{"DJ_CACHE_DIR"}, Usage: "keep the local cache of remote repositories (index, snapshot and tree-pack files, one directory per repository id) under `DIR` (default $XDG_CACHE_HOME/dj or ~/.cache/dj)"},
		&cli.StringFlag{Name: "cache-max-size", EnvVars: []string{"DJ_CACHE_MAX_SIZE"}, Value: "4G", Action: checkCacheMaxSize, Usage: "keep at most `SIZE` of tree packs in a repository's local cache (K, M, G, T); the least recently used are removed first"},
		&cli.StringFlag{Name: "compression", EnvVars: []string{"DJ_COMPRESSION"}, Value: "auto", Usage: "compression `MODE`: off, fastest, auto, better or best"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "print more detail (-vv or --verbose=2 for even more)"},
		&cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON"},
		&cli.BoolFlag{Name: "no-lock", Usage: "do not lock the repository (read-only commands only)"},
		&cli.DurationFlag{Name: "retry-lock", Usage: "when the repository is locked, retry for up to `DURATION` before giving up"},
		&cli.BoolFlag{Name: "no-cache", Usage: "do not use the local cache of remote repositories"},
		&cli.IntFlag{Name: "limit-upload", EnvVars: []string{"DJ_LIMIT_UPLOAD"}, Action: checkRate("limit-upload"), DefaultText: "unlimited", Usage: "limit uploads to `KiB/s`"},
		&cli.IntFlag{Name: "limit-download", EnvVars: []string{"DJ_LIMIT_DOWNLOAD"}, Action: checkRate("limit-download"), DefaultText: "unlimited", Usage: "limit downloads to `KiB/s`"},
		&cli.UintFlag{Name: "pack-size", EnvVars: []string{"DJ_PACK_SIZE"}, Action: checkPackSize, DefaultText: "the repository's, 16",
			Usage: fmt.Sprintf("target pack size in `MiB`, %d to %d; packs may be larger", minPackSizeMiB, maxPackSizeMiB)},
		&cli.StringSliceFlag{Name: "cacert", EnvVars: []string{"DJ_CACERT"}, Usage: "trust the certificates in PEM `FILE` (repeatable) for HTTPS repositories, instead of the system's"},
		&cli.StringFlag{Name: "tls-client-cert", EnvVars: []string{"DJ_TLS_CLIENT_CERT"}, Usage: "present the certificate and key in PEM `FILE` (both in one file) to HTTPS repositories"},
		&cli.BoolFlag{Name: "insecure-tls", Usage: "do not verify the certificate of HTTPS repositories (trust any server: tests only)"},
		&cli.StringSliceFlag{Name: "option", Aliases: []string{"o"}, Action: checkExtendedOptions,
			Usage: "set extended option `KEY=VALUE`, repeatable (`dj options` says what each does); known: " + strings.Join(extendedOptionKeys(), ", ")},
	}
}

// env is what a command needs from the global flags.
type env struct {
	c       *cli.Context
	ctx     context.Context
	stdout  io.Writer
	stderr  io.Writer
	json    bool
	quiet   bool
	verbose bool
	// rf names where the repository and its password come from: the
	// main repository's flags, or copy's --from-* flags.
	rf repoFlags
	// verbosity counts -v: 0 without it, 2 for -vv or --verbose=2.
	verbosity int
}

func newEnv(c *cli.Context) *env {
	return &env{c: c, ctx: withTestTimeout(c.Context), stdout: c.App.Writer, stderr: c.App.ErrWriter,
		json: c.Bool("json"), quiet: c.Bool("quiet"), verbose: c.Bool("verbose"), verbosity: c.Count("verbose"), rf: mainRepoFlags()}
}

// repoFlags names the flags and the variable that locate a repository and
// give its password, so that one set of functions opens both the main
// repository and a second one (the source of `dj copy`).
type repoFlags struct {
	repo, repoFile, passwordFile, passwordCommand string // flag names
	passwordEnv                                   string // variable holding the password
	noRepo                                        string // how to name a location, for the error without one
	noPassword                                    string // how to give a password, for the error without one
	prompt                                        string
}

func mainRepoFlags() repoFlags {
	return repoFlags{repo: "repo", repoFile: "repository-file", passwordFile: "password-file", passwordCommand: "password-command",
		passwordEnv: "DJ_PASSWORD", noRepo: "use -r/--repo or set DJ_REPOSITORY",
		noPassword: "use --password-file, DJ_PASSWORD, DJ_PASSWORD_FILE, --password-command",
		prompt:     "enter password for repository: "}
}

// printf prints to stdout unless --quiet or --json.
func (e *env) printf(format string, args ...any) {
	if e.quiet || e.json {
		return
	}
	fmt.Fprintf(e.stdout, format, args...)
}

// warnf prints a warning to stderr.
func (e *env) warnf(format string, args ...any) {
	fmt.Fprintf(e.stderr, format, args...)
}

// printJSON writes v as indented JSON.
func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", " ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// stderrIsTerminal reports whether progress may be drawn.
func (e *env) progressWanted() bool {
	if e.quiet || e.json {
		return false
	}
	f, ok := e.stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (e *env) location() (string, error) {
	loc := e.c.String(e.rf.repo)
	if loc == "" && e.c.String(e.rf.repoFile) != "" {
		b, err := os.ReadFile(e.c.String(e.rf.repoFile))
		if err != nil {
			return "", fmt.Errorf("read repository file: %w", err)
		}
		loc = strings.TrimSpace(string(b))
	}
	if loc == "" {
		return "", usageError("no repository given: %s", e.rf.noRepo)
	}
	return loc, nil
}

// locations is the registry of repository location schemes; it is built
// once and never changed.
var locations = location.NewBuiltin()

// openBackend opens (or, with create, creates) the storage at the location
// through the location registry, with the -o options, the rate limits,
// the retry layer for a remote repository and, for a remote repository,
// the on-disk cache (cache.Disk, keyed by the repository id that repo.Open
// announces to it) unless --no-cache or the command is check.
func (e *env) openBackend(create bool) (backend.Backend, error) {
	loc, err := e.location()
	if err != nil {
		return nil, err
	}
	opts, err := e.extendedOptions()
	if err != nil {
		return nil, err
	}
	tlsConf, err := e.tlsConfig()
	if err != nil {
		return nil, err
	}
	p := location.Params{Options: opts, Rates: e.rates(), TLS: tlsConf,
		Retry: retry.Options{Notify: func(op string, h backend.Handle, attempt int, err error, wait time.Duration) {
			if e.verbose {
				e.warnf("retrying %s %s after error (attempt %d): %v\n", op, h, attempt, err)
			}
		}}}
	p.Retry = withTestRetry(p.Retry)
	if e.verbose {
		p.Stderr = e.stderr
	}
	be, scheme, err := e.withTestFaults(locations.Open(e.ctx, loc, p, create))
	if err != nil {
		if !create && errors.Is(err, fs.ErrNotExist) {
			if errors.Is(err, syscall.ENOTDIR) { // the path runs through a file: say which
				dir := strings.TrimPrefix(loc, "local:")
				return nil, fmt.Errorf("%s: %w: %s", dir, repo.ErrNoRepository, local.NotDirectory(dir))
			}
			if scheme.Name == "local" {
				loc = strings.TrimPrefix(loc, "local:")
			}
			return nil, fmt.Errorf("%s: %w (create one with `dj init`)", redactLocation(loc), repo.ErrNoRepository)
		}
		if errors.Is(err, rest.ErrUntrustedCertificate) {
			return nil, fmt.Errorf("%w (check the server's certificate: give it, or its CA, with --cacert FILE; --insecure-tls skips the check)", err)
		}
		if errors.Is(err, rest.ErrTLSRefused) {
			return nil, fmt.Errorf("%w (check the client certificate the server wants: --tls-client-cert FILE)", err)
		}
		return nil, err
	}
	// check reads what the server holds, not a local copy of it (restic's
	// check does the same with a new temporary cache).
	if scheme.Remote && !globals(e.c).Bool("no-cache") && (e.c.Command == nil || e.c.Command.Name != "check") {
		if dir := e.cacheDir(); dir != "" {
			max, err := parseSize(globals(e.c).String("cache-max-size"))
			if err != nil || max <= 0 {
				be.Close()
				return nil, checkCacheMaxSize(e.c, globals(e.c).String("cache-max-size"))
			}
			be = cache.NewDisk(be, dir, max)
		}
	}
	return be, nil
}

// tlsConfig returns the TLS configuration of HTTPS repositories from
// --cacert, --tls-client-cert and --insecure-tls, or nil without them
// (the system's roots, no client certificate).
func (e *env) tlsConfig() (*tls.Config, error) {
	g := globals(e.c)
	cacerts, clientCert, insecure := g.StringSlice("cacert"), g.String("tls-client-cert"), g.Bool("insecure-tls")
	if len(cacerts) == 0 && clientCert == "" && !insecure {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if len(cacerts) > 0 {
		pool := x509.NewCertPool()
		for _, f := range cacerts {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("--cacert: %w", err)
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, usageError("--cacert %s: no PEM certificate in the file", f)
			}
		}
		conf.RootCAs = pool
	}
	if clientCert != "" {
		b, err := os.ReadFile(clientCert)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-cert: %w", err)
		}
		cert, err := tls.X509KeyPair(b, b)
		if err != nil {
			return nil, usageError("--tls-client-cert %s: want a PEM file with the certificate and its private key: %v", clientCert, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// checkCacheMaxSize refuses a --cache-max-size that is not a positive
// size.
func checkCacheMaxSize(_ *cli.Context, s string) error {
	if n, err := parseSize(s); err != nil || n <= 0 {
		return usageError("invalid --cache-max-size %q: want a size like 500M or 4G", s)
	}
	return nil
}

// remote reports whether the repository lies across a network (its
// location's scheme says so): commands then keep more requests in flight.
func (e *env) remote() bool {
	loc, err := e.location()
	if err != nil {
		return false
	}
	scheme, err := locations.Lookup(loc)
	return err == nil && scheme.Remote
}

// cacheDir returns the base directory of the on-disk caches of remote
// repositories: --cache-dir, or $XDG_CACHE_HOME/dj, or ~/.cache/dj. Each
// repository has its own subdirectory there, named by its id. Empty means
// no cache.
func (e *env) cacheDir() string {
	if dir := e.c.String("cache-dir"); dir != "" {
		return dir
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(base, "dj")
}

func (e *env) repoOptions() repo.Options {
	opts := repo.Options{Compression: e.c.String("compression"), PackSize: e.packSize()}
	if os.Getenv("DJ_INSECURE_TEST_KDF") == "1" {
		opts.KDF = &crypto.TestKDF
	}
	return withTestLock(opts)
}

// openRepo opens the repository; with loadIndex it also reads the index.
func (e *env) openRepo(loadIndex bool) (*repo.Repository, error) {
	be, err := e.openBackend(false)
	if err != nil {
		return nil, err
	}
	pw, err := e.password(e.rf.prompt, false)
	if err != nil {
		be.Close()
		return nil, err
	}
	r, err := repo.Open(e.ctx, be, pw, e.repoOptions())
	if err != nil {
		be.Close()
		return nil, err
	}
	if loadIndex {
		if _, err := r.LoadIndex(e.ctx, false); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// repoLoad says what openLocked loads once the lock is held.
type repoLoad int

const (
	loadNothing repoLoad = iota
	loadIndex
	// loadIndexSnapshots: the index, and for a remote repository the
	// snapshots too, in the background (Repository.PrefetchSnapshots),
	// for a command that looks them up.
	loadIndexSnapshots
)

// openLocked opens the repository, takes the lock, and only then loads the
// index (unless load is loadNothing). The order matters: an index read before the lock
// may name packs that a prune deletes in between, and a backup would then
// deduplicate against data that is gone.
func (e *env) openLocked(kind repo.LockKind, readOnly bool, load repoLoad) (*repo.Repository, func(), error) {
	r, err := e.openRepo(false)
	if err != nil {
		return nil, nil, err
	}
	unlock, err := e.lock(r, kind, readOnly)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	if load != loadNothing {
		if load == loadIndexSnapshots && e.remote() {
			// Across a network, list the snapshots while the index
			// loads. Both listings follow the lock.
			r.PrefetchSnapshots(e.ctx)
		}
		if _, err := r.LoadIndex(e.ctx, false); err != nil {
			unlock()
			r.Close()
			return nil, nil, err
		}
	}
	return r, func() { unlock(); r.Close() }, nil
}

// lock takes a repository lock unless --no-lock is given for a read-only
// command.
func (e *env) lock(r *repo.Repository, kind repo.LockKind, readOnly bool) (func(), error) {
	if readOnly && e.c.Bool("no-lock") {
		return func() {}, nil
	}
	deadline := time.Now().Add(e.c.Duration("retry-lock"))
	l, err := r.Lock(e.ctx, kind)
	for err != nil && errors.Is(err, repo.ErrLocked) && time.Now().Before(deadline) {
		select {
		case <-e.ctx.Done():
			return nil, e.ctx.Err()
		case <-time.After(min(5*time.Second, time.Until(deadline))):
		}
		l, err = r.Lock(e.ctx, kind)
	}
	if err != nil {
		return nil, err
	}
	// A writer stops as soon as its lock is lost; a reader (a mount may
	// run for weeks, through suspends) goes on: it writes nothing.
	stopWatch := func() {}
	if kind != repo.LockRead {
		stopWatch = watchLock(e.ctx, l)
	}
	return func() {
		stopWatch()
		ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout(e.ctx))
		defer cancel()
		_ = l.Unlock(ctx)
	}, nil
}

// unlockTimeout bounds the removal of a lock file, retries included: a
// user who pressed Ctrl-C must not wait for the retry layer to give up on
// an unreachable server. A lock left behind is stale once its process is
// gone: other commands ignore it and `dj unlock` removes it.
func unlockTimeout(ctx context.Context) time.Duration {
	if ctx.Err() != nil {
		return 5 * time.Second
	}
	return time.Minute
}

// snapshots loads the snapshot list and warns, on stderr, about each
// snapshot file that cannot be read.
func (e *env) snapshots(r *repo.Repository) ([]*snapshot.Snapshot, error) {
	list, problems, err := r.Snapshots(e.ctx)
	if err != nil {
		return nil, err
	}
	e.warnUnreadable(problems)
	return list, nil
}

// warnUnreadable warns about snapshot files that cannot be read.
func (e *env) warnUnreadable(problems []repo.SnapshotProblem) {
	for _, p := range problems {
		e.warnf("warning: snapshot %s cannot be read: %v\n", p.ID.Short(), p.Err)
	}
}

// findSnapshot resolves "latest", an ID or an ID prefix.
func findSnapshot(ctx context.Context, r *repo.Repository, ref string, f snapshot.Filter) (*snapshot.Snapshot, error) {
	list, _, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	if ref == "latest" {
		list = f.Apply(list)
	}
	return snapshot.Find(list, ref)
}

// usageErr marks a mistake in how dj was called.
type usageErr struct{ msg string }

func (u usageErr) Error() string { return u.msg }

func usageError(format string, args ...any) error {
	return usageErr{fmt.Sprintf(format, args...)}
}

// exitCodeErr carries a chosen exit code with an error message already
// printed (or none to print).
type exitCodeErr struct {
	code int
	err  error
}

func (x exitCodeErr) Error() string {
	if x.err == nil {
		return ""
	}
	return x.err.Error()
}
func (x exitCodeErr) Unwrap() error { return x.err }

func exitCode(err error) int {
	var x exitCodeErr
	switch {
	case errors.As(err, &x):
		return x.code
	case errors.Is(err, repo.ErrNoRepository), errors.Is(err, repo.ErrResticRepository):
		return exitNoRepository
	case errors.Is(err, repo.ErrLocked):
		return exitLocked
	case errors.Is(err, repo.ErrWrongPassword):
		return exitWrongPass
	case errors.Is(err, archiver.ErrIncomplete):
		return exitIncomplete
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return remoteExitCode(err)
}

// oneLine renders an error as one line with a hint where one helps.
func oneLine(err error) string {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	switch {
	case errors.Is(err, repo.ErrWrongPassword):
		return msg + " (check the password, or DJ_PASSWORD / --password-file)"
	case errors.Is(err, repo.ErrCorrupt):
		return msg + " (run `dj check` for details)"
	}
	return msg
}

func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}
