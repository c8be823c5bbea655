// Package rclone reaches a repository anywhere rclone reaches (dozens of
// cloud providers): it runs `rclone serve restic --stdio REMOTE:PATH` and
// speaks restic's REST protocol (package rest's client) to that process over
// its stdin and stdout, as HTTP/2 without TLS. The one "connection" is the
// pair of pipes: HTTP/2 multiplexes every concurrent request over it, and
// when the process dies the backend fails every later call with one clear
// error (a later command starts a new process).
//
// Locations are rclone:REMOTE:PATH (as rclone names them: "b2:bucket/dir",
// "myremote:", or a local path for tests). Options: -o rclone.program=PATH
// (default "rclone") and -o rclone.args="serve restic --stdio" (the words
// before the remote; restic's default). rclone's stderr goes to the
// caller's (Config.Stderr), so its own errors are seen.
package rclone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"dj/backend"
	"dj/backend/limit"
	"dj/backend/rest"
)

// Config says how to start rclone.
type Config struct {
	// Remote is rclone's REMOTE:PATH.
	Remote string
	// Program is the rclone binary; empty means "rclone" on PATH.
	Program string
	// Args are the words before the remote; nil means serve restic --stdio.
	Args []string
	// Stderr receives rclone's own messages; nil means os.Stderr.
	Stderr io.Writer
	// Rates pace the pipes to rclone (--limit-upload, --limit-download):
	// every request shares them, so they are paced as streams.
	Rates limit.Rates
}

// DefaultArgs are the words of rclone's command line before the remote.
func DefaultArgs() []string { return []string{"serve", "restic", "--stdio"} }

// ParseLocation parses rclone:REMOTE:PATH and the rclone.* options.
func ParseLocation(loc string, opts map[string]string) (Config, error) {
	remote, ok := strings.CutPrefix(loc, "rclone:")
	if !ok || remote == "" {
		return Config{}, fmt.Errorf("invalid rclone location %q: want rclone:REMOTE:PATH", loc)
	}
	cfg := Config{Remote: remote}
	for k, v := range opts {
		switch k {
		case "rclone.program":
			cfg.Program = v
		case "rclone.args":
			cfg.Args = strings.Fields(v)
		}
	}
	return cfg, nil
}

var _ backend.Backend = (*Backend)(nil)

// Backend is a repository behind an rclone process. Its methods are safe
// for concurrent use.
type Backend struct {
	*rest.Client
	location string
	proc     *process

	mu     sync.Mutex
	saving map[string]*sync.Mutex // one lock per name being saved
}

// Location returns rclone:REMOTE:PATH.
func (b *Backend) Location() string { return b.location }

// Close closes the connection and waits for rclone to exit.
func (b *Backend) Close() error {
	_ = b.Client.Close()
	return b.proc.stop()
}

// Open starts rclone and opens the repository it serves.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	return start(ctx, cfg, rest.Open)
}

// Create starts rclone and lays out a new repository.
func Create(ctx context.Context, cfg Config) (*Backend, error) {
	return start(ctx, cfg, rest.Create)
}

// serveURL is the URL the REST client uses; the host is never resolved.
const serveURL = "http://rclone/"

func start(ctx context.Context, cfg Config, open func(context.Context, string, *http.Client) (*rest.Client, error)) (*Backend, error) {
	loc := "rclone:" + cfg.Remote
	p, err := startProcess(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", loc, err)
	}
	t := &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return p.conn() },
		// The pipes carry HTTP/2 from the first byte (prior knowledge).
		Protocols:             new(http.Protocols),
		ResponseHeaderTimeout: 5 * time.Minute,
	}
	t.Protocols.SetUnencryptedHTTP2(true)
	c, err := open(ctx, serveURL, &http.Client{Transport: t})
	if err != nil {
		var se *rest.StatusError
		answered := errors.As(err, &se) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrExist)
		if !answered {
			if msg := p.exitMessage(); msg != "" {
				_ = p.stop()
				return nil, fmt.Errorf("%s: %s", loc, msg)
			}
		}
		_ = p.stop()
		return nil, &locationError{loc: loc, err: err}
	}
	return &Backend{Client: c, location: loc, proc: p, saving: make(map[string]*sync.Mutex)}, nil
}

// saveConcurrency is how many saves a backup runs at once through rclone
// (restic keeps 5 requests in flight to rclone too): a single save is
// slow against the link, rclone relaying it to the remote storage. With
// the packer's default of 2, a backup through rclone to
// S3 was slower than restic's (the remote bench of 2026-12-06: 0.67x).
// Paired backups of the remote bench's corpus (272 MB) through rclone
// 1.60 to versitygw on this 2-core machine, no delay: 9.44-10.70 s with
// 2 saves at once, 5.71-9.60 s with 5 (3 pairs); across 20 ms 6.24-6.68 s
// with 5 and 5.40-6.91 s with 8.
const saveConcurrency = 5

// SaveConcurrency implements backend.ConcurrentSaver.
func (b *Backend) SaveConcurrency() int { return saveConcurrency }

// Save saves a file once: rclone's server writes a file in place, so a
// reader of a file being saved again could see it partly written. Every dj
// file but the config is named by the hash of its bytes, so a file that
// exists with the same size holds the same bytes and is not sent again;
// saves of one name from this process are serialized.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if h.Type == backend.ConfigFile {
		return b.Client.Save(ctx, h, data)
	}
	mu := b.nameLock(h.String())
	mu.Lock()
	defer mu.Unlock()
	if fi, err := b.Client.Stat(ctx, h); err == nil && fi.Size == int64(len(data)) {
		return nil
	}
	return b.Client.Save(ctx, h, data)
}

// nameLock returns the lock of one file name.
func (b *Backend) nameLock(name string) *sync.Mutex {
	b.mu.Lock()
	defer b.mu.Unlock()
	mu := b.saving[name]
	if mu == nil {
		if len(b.saving) > 4096 {
			clear(b.saving) // locks held now stay valid for their holders
		}
		mu = new(sync.Mutex)
		b.saving[name] = mu
	}
	return mu
}

// locationError is an error of the REST client that names the rclone
// location instead of the URL the client speaks to.
type locationError struct {
	loc string
	err error
}

func (e *locationError) Error() string {
	return strings.ReplaceAll(e.err.Error(), "rest:"+serveURL, e.loc)
}

func (e *locationError) Unwrap() error { return e.err }

// process is a running rclone and its one connection.
type process struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	pacer  *limit.Pacer  // nil without rate limits
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, set before done closes

	mu     sync.Mutex
	dialed bool
}

func startProcess(cfg Config) (*process, error) {
	prog := cfg.Program
	if prog == "" {
		prog = "rclone"
	}
	path, err := exec.LookPath(prog)
	if err != nil {
		return nil, fmt.Errorf("%s not found: install rclone (apt-get install rclone) or set -o rclone.program=PATH", prog)
	}
	args := cfg.Args
	if args == nil {
		args = DefaultArgs()
	}
	cmd := exec.Command(path, append(append([]string(nil), args...), cfg.Remote)...)
	cmd.Stderr = cfg.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	// rclone must not get the terminal's signals: an interrupt of dj
	// stops dj, which then ends rclone by closing its stdin.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &process{cmd: cmd, stdin: stdin, stdout: stdout, pacer: limit.NewPacer(cfg.Rates), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// errGone is the error of every request after rclone has exited.
var errGone = errors.New("rclone has exited")

// conn returns the connection over the pipes, once: a second dial means the
// first connection broke, and there is no second one to make.
func (p *process) conn() (net.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dialed {
		return nil, errGone
	}
	p.dialed = true
	return &pipeConn{r: io.NopCloser(p.pacer.Download(p.stdout)), w: p.pacer.Upload(p.stdin), closeR: p.stdout}, nil
}

// exitMessage describes how rclone ended, if it has ended on its own
// within a second.
func (p *process) exitMessage() string {
	select {
	case <-p.done:
	case <-time.After(time.Second):
		return ""
	}
	if p.err != nil {
		return fmt.Sprintf("rclone failed (%v); its messages are above", p.err)
	}
	return "rclone exited"
}

// stop closes rclone's stdin, which ends it, and waits; it kills it if it
// does not end within 10 seconds.
func (p *process) stop() error {
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// pipeConn is a net.Conn over a pair of pipes.
type pipeConn struct {
	r      io.ReadCloser
	w      io.WriteCloser
	closeR io.Closer // the pipe under r
}

func (c *pipeConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *pipeConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *pipeConn) Close() error {
	err := c.w.Close()
	if rerr := c.closeR.Close(); err == nil {
		err = rerr
	}
	return err
}
func (c *pipeConn) LocalAddr() net.Addr                { return pipeAddr{} }
func (c *pipeConn) RemoteAddr() net.Addr               { return pipeAddr{} }
func (c *pipeConn) SetDeadline(t time.Time) error      { return nil }
func (c *pipeConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { return nil }

// pipeAddr is the address of both ends of a pipeConn.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "rclone" }
