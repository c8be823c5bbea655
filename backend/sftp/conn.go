package sftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"

	"dj/backend"
	"dj/backend/limit"
)

// Transfer tuning. OpenSSH's sftp-server accepts messages of 256 KiB and
// reads and writes of up to 255 KiB (its limits@openssh.com answer): a
// server that states limits (recent OpenSSH) gets packets of maxPacket.
// Any other gets safePacket, the size every SFTP server must take (the
// drafts ask for messages of 34,000 bytes): a server that takes less ends
// the session at the first longer message, so an upload of 255 KiB pieces
// could never reach it (TestStrictSmallMessageServer). Many requests in
// flight per file hide the round trip of a remote link.
const (
	maxPacket         = 255 << 10
	safePacket        = 32 << 10
	limitsExtension   = "limits@openssh.com"
	requestsPerFile   = 64
	connectTimeout    = 2 * time.Minute
	closeWait         = 5 * time.Second
	stderrTailLimit   = 4 << 10
	stderrUsefulLines = 3
)

// conn is one ssh process with an SFTP client over its pipes.
type conn struct {
	cmd    *exec.Cmd
	client *sftp.Client
	stderr *tail
	// done is closed when the SFTP session has ended (the pipe closed or
	// the process died).
	done chan struct{}
	// posixRename and fsync report the OpenSSH extensions the server has.
	posixRename, fsync bool

	// The watchdog's state: calls running on the connection, and the
	// time (UnixNano) of the last byte received or of the start of a
	// call on an idle connection.
	calls        atomic.Int32
	lastActivity atomic.Int64
	stalled      atomic.Bool
	stall        time.Duration

	// packs keeps pack files open across ranged loads.
	packs *openPacks
}

// begin and end bracket a call on the connection, for the watchdog.
func (c *conn) begin() {
	if c.calls.Add(1) == 1 {
		c.lastActivity.Store(time.Now().UnixNano())
	}
}

func (c *conn) end() { c.calls.Add(-1) }

// activity records that bytes arrived.
type activity struct {
	r io.Reader
	c *conn
}

func (a activity) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.c.lastActivity.Store(time.Now().UnixNano())
	}
	return n, err
}

// watch kills the ssh process when calls wait and nothing has arrived
// for stall, so that a hung server or network ends the connection (and
// its calls fail and are retried) instead of hanging dj. It returns when
// the session ends.
func (c *conn) watch() {
	stall := c.stall
	tick := time.NewTicker(max(stall/8, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-tick.C:
			last := time.Unix(0, c.lastActivity.Load())
			if c.calls.Load() > 0 && time.Since(last) > stall {
				c.stalled.Store(true)
				_ = c.cmd.Process.Kill()
				return
			}
		}
	}
}

// alive reports whether the session still runs.
func (c *conn) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// close ends the session and the ssh process; a process that does not
// end within closeWait (a hung server) is killed.
func (c *conn) close() error {
	errc := make(chan error, 1)
	go func() { errc <- c.client.Close() }()
	var err error
	select {
	case err = <-errc:
	case <-time.After(closeWait):
		_ = c.cmd.Process.Kill()
		err = <-errc
	}
	exited := make(chan struct{})
	go func() {
		_ = c.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(closeWait):
		_ = c.cmd.Process.Kill()
		<-exited
	}
	if errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EPIPE) {
		err = nil
	}
	return err
}

// dial starts ssh (or sftp.command) and opens an SFTP session over it.
func dial(ctx context.Context, cfg Config, pacer *limit.Pacer) (*conn, error) {
	argv, err := cfg.command()
	if err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("option %s: empty command", OptionCommand)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	st := &tail{max: stderrTailLimit, also: cfg.Stderr}
	cmd.Stderr = st
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	growPipe(stdin)
	growPipe(stdout)
	if err := cmd.Start(); err != nil {
		return nil, &ConnectError{Location: cfg.Location, Err: err, permanent: true,
			Hint: fmt.Sprintf("cannot run %q; install OpenSSH's client or set -o %s", argv[0], OptionCommand)}
	}
	c := &conn{cmd: cmd, stderr: st, done: make(chan struct{})}
	c.packs = newOpenPacks(func(f packFile) {
		// Nothing waits for the close of a file that was only read.
		c.begin()
		go func() {
			defer c.end()
			_ = f.Close()
		}()
	})
	c.lastActivity.Store(time.Now().UnixNano())

	type result struct {
		client *sftp.Client
		err    error
	}
	res := make(chan result, 1)
	go func() {
		cl, err := sftp.NewClientPipe(activity{pacer.Download(stdout), c}, pacer.Upload(stdin),
			sftp.MaxPacketUnchecked(safePacket),
			sftp.MaxConcurrentRequestsPerFile(requestsPerFile),
			sftp.UseConcurrentWrites(true),
			sftp.UseConcurrentReads(true),
		)
		res <- result{cl, err}
	}()
	connectTimeout := backend.StallTimeout(ctx, cfg.connect)
	timer := time.NewTimer(connectTimeout)
	defer timer.Stop()
	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, ctx.Err()
	case <-timer.C:
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, &ConnectError{Location: cfg.Location, Err: fmt.Errorf("no SFTP session after %v", connectTimeout), class: backend.ErrUnreachable,
			Hint: "check that `" + strings.Join(argv, " ") + "` reaches the server"}
	}
	if r.err != nil {
		// ssh has failed or will: wait for its exit so that its last
		// words are in the buffer.
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case <-waited:
		case <-time.After(closeWait):
			_ = cmd.Process.Kill()
			<-waited
		}
		return nil, connectError(cfg, argv, st.String(), r.err)
	}
	c.client = r.client
	if _, ok := r.client.HasExtension(limitsExtension); ok {
		// An option of pkg/sftp is a setter; nothing has used the
		// client yet.
		_ = sftp.MaxPacketUnchecked(maxPacket)(r.client)
	}
	_, c.posixRename = r.client.HasExtension("posix-rename@openssh.com")
	if v, ok := r.client.HasExtension("fsync@openssh.com"); ok && v == "1" {
		c.fsync = true
	}
	go func() {
		_ = r.client.Wait()
		close(c.done)
	}()
	c.stall = cfg.StallTimeout // set by newBackend
	go c.watch()
	return c, nil
}

// ConnectError is a failure to open an SFTP session. Its message is one
// line: the location, what ssh said, and what to do.
type ConnectError struct {
	Location string
	// Err is what ssh printed last, or the error of the SFTP handshake.
	Err error
	// Hint says what to do.
	Hint      string
	permanent bool
	// class is backend.ErrAuth, ErrHostKey or ErrUnreachable, or nil.
	class error
}

func (e *ConnectError) Error() string {
	msg := fmt.Sprintf("%s: cannot connect: %v", e.Location, e.Err)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Unwrap returns Err and the class of the failure (backend.ErrAuth,
// backend.ErrHostKey or backend.ErrUnreachable) when it is known.
func (e *ConnectError) Unwrap() []error {
	if e.class != nil {
		return []error{e.Err, e.class}
	}
	return []error{e.Err}
}

// Permanent reports whether connecting again cannot help: refused
// authentication, a wrong host key, an unknown host name, a missing ssh
// program. A refused or timed-out connection is not permanent: the server
// may be restarting.
func (e *ConnectError) Permanent() bool { return e.permanent }

// connectError turns a failed handshake and ssh's standard error into a
// ConnectError.
func connectError(cfg Config, argv []string, stderr string, err error) error {
	said := lastLines(stderr, stderrUsefulLines)
	e := &ConnectError{Location: cfg.Location, Err: err}
	if said != "" {
		e.Err = errors.New(said)
	}
	cmdline := strings.Join(argv, " ")
	switch low := strings.ToLower(stderr); {
	case strings.Contains(low, "permission denied"), strings.Contains(low, "too many authentication failures"):
		e.permanent, e.class = true, backend.ErrAuth
		e.Hint = "authentication failed: check the user, the key (ssh-agent, -i via -o " + OptionArgs + ") and that `" + sshLogin(argv) + "` logs in"
	case strings.Contains(low, "host key verification failed"), strings.Contains(low, "remote host identification has changed"):
		e.permanent, e.class = true, backend.ErrHostKey
		e.Err = errors.New(lastLines(stderr, 1))
		e.Hint = "the server's host key is not the one in known_hosts: verify it and update known_hosts"
	case strings.Contains(low, "could not resolve hostname"):
		e.permanent, e.class = true, backend.ErrUnreachable
		e.Hint = "check the host name"
	case strings.Contains(low, "subsystem request failed"):
		e.permanent = true
		e.Hint = "the server does not offer SFTP: enable its sftp subsystem"
	case strings.Contains(low, "connection refused"), strings.Contains(low, "no route to host"),
		strings.Contains(low, "timed out"), strings.Contains(low, "network is unreachable"), strings.Contains(low, "connection closed"):
		e.class = backend.ErrUnreachable
		e.Hint = "the host is unreachable: check the host, the port and that sshd runs there"
	default:
		if said == "" {
			e.Err = fmt.Errorf("%s ended without an SFTP session: %v", argv[0], err)
		}
		e.Hint = "check that `" + cmdline + "` starts an SFTP session"
	}
	return e
}

// sshLogin is the ssh command without "-s sftp", for a hint.
func sshLogin(argv []string) string {
	if n := len(argv); n >= 2 && argv[n-2] == "-s" && argv[n-1] == "sftp" {
		argv = argv[:n-2]
	}
	return strings.Join(argv, " ")
}

// lastLines returns up to n of the last non-empty lines of s, joined by
// "; ", without ssh's banner of asterisks and at-signs.
func lastLines(s string, n int) string {
	var keep []string
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		l := strings.TrimSpace(strings.TrimRight(lines[i], "\r"))
		if l == "" || strings.Trim(l, "@*") == "" {
			continue
		}
		keep = append([]string{l}, keep...)
	}
	return strings.Join(keep, "; ")
}

// tail keeps the last max bytes written to it, and copies everything to
// also when that is set.
type tail struct {
	mu   sync.Mutex
	max  int
	buf  []byte
	also io.Writer
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	if t.also != nil {
		_, _ = t.also.Write(p)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// isConnectionError reports whether err says the session is gone rather
// than that the server answered a request with a failure.
func isConnectionError(c *conn, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, sftp.ErrSSHFxConnectionLost), errors.Is(err, sftp.ErrSSHFxNoConnection),
		errors.Is(err, syscall.EPIPE), errors.Is(err, os.ErrClosed), errors.Is(err, io.ErrClosedPipe):
		return true
	case !c.alive():
		return true
	}
	var se *sftp.StatusError
	if errors.As(err, &se) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) ||
		errors.Is(err, fs.ErrExist) || errors.Is(err, fs.ErrInvalid) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) {
		return false
	}
	return true
}

// ConnectionLostError is an operation that failed because its SSH
// connection ended. It is not permanent: the next call connects again,
// and the retry layer retries the operation. It does not unwrap: its
// cause (an EOF, a closed pipe) must not look like a permanent failure.
type ConnectionLostError struct {
	Location string
	Err      error
}

func (e *ConnectionLostError) Error() string {
	return fmt.Sprintf("%s: connection lost: %v", e.Location, e.Err)
}
