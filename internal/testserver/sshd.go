// Package testserver starts real servers on 127.0.0.1 for dj's tests: an
// OpenSSH server (Debian's openssh-server) with its own host key, one
// authorized client key and an ssh client configuration that reaches it,
// all in a temporary directory and stopped when the test ends.
package testserver

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SSHDPath is where Debian installs the OpenSSH server.
const SSHDPath = "/usr/sbin/sshd"

// SSHHost is the host alias the client configuration of an SSHD defines.
const SSHHost = "djtest"

// SSHD is a running OpenSSH server that accepts the key in KeyFile for
// root (or the user running the test) on 127.0.0.1:Port.
type SSHD struct {
	// Dir holds the keys, the configurations, known_hosts and the log.
	Dir string
	// Port is the server's port on 127.0.0.1.
	Port int
	// User is the account the client key logs into.
	User string
	// KeyFile is the client's private key.
	KeyFile string
	// KnownHosts holds the server's host key, for StrictHostKeyChecking.
	KnownHosts string
	// ConfigFile is an ssh client configuration (for `ssh -F`) in which
	// the host SSHHost is this server with KeyFile and KnownHosts.
	ConfigFile string

	log *SyncBuffer

	mu      sync.Mutex // guards cmd and stopped across Stop and Restart
	cmd     *exec.Cmd
	stopped chan struct{}
}

// RequireSSHD skips the test under -short and fails it when OpenSSH is
// not installed or the test does not run as root (sshd needs root to
// switch to the logged-in user).
func RequireSSHD(t TB) {
	t.Helper()
	if testing.Testing() && testing.Short() {
		t.Skip("starts an OpenSSH server; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("sshd needs root (the CI and developer machines run tests as root)")
	}
	for _, p := range []string{SSHDPath, "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed: run `make test-deps` (as root) or apt-get install openssh-server openssh-client", p)
		}
	}
}

// StartSSHD starts an OpenSSH server on a free port of 127.0.0.1 and
// stops it when the test ends.
func StartSSHD(t TB) *SSHD {
	t.Helper()
	RequireSSHD(t)
	dir := t.TempDir()
	// sshd refuses keys and configurations in directories others may
	// write (StrictModes is off, but keep it tidy) and needs its
	// privilege separation directory.
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	s := &SSHD{Dir: dir, User: "root", KeyFile: filepath.Join(dir, "id_ed25519"),
		KnownHosts: filepath.Join(dir, "known_hosts"), ConfigFile: filepath.Join(dir, "ssh_config"),
		log: &SyncBuffer{}}
	hostKey := filepath.Join(dir, "host_ed25519")
	for _, k := range []string{s.KeyFile, hostKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dj-test", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	clientPub, err := os.ReadFile(s.KeyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, clientPub, 0o600); err != nil {
		t.Fatal(err)
	}

	var lastErr error
	for try := 0; try < 5; try++ { // a free port may be taken before sshd binds it
		s.Port = freePort(t)
		if err := os.WriteFile(s.KnownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", s.Port, hostPub)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.writeConfigs(hostKey, authorized); err != nil {
			t.Fatal(err)
		}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("start sshd: %v", lastErr)
	return nil
}

func freePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *SSHD) writeConfigs(hostKey, authorized string) error {
	server := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 100
LogLevel ERROR
Subsystem sftp internal-sftp
`, s.Port, hostKey, authorized)
	if err := os.WriteFile(filepath.Join(s.Dir, "sshd_config"), []byte(server), 0o600); err != nil {
		return err
	}
	client := fmt.Sprintf(`Host %s
  HostName 127.0.0.1
  Port %d
  User %s
  IdentityFile %s
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
`, SSHHost, s.Port, s.User, s.KeyFile, s.KnownHosts)
	return os.WriteFile(s.ConfigFile, []byte(client), 0o600)
}

// start runs sshd in the foreground (-D) and waits until it accepts
// connections.
func (s *SSHD) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", filepath.Join(s.Dir, "sshd_config"))
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)), time.Second)
		if err == nil {
			c.Close()
			stopped := make(chan struct{})
			s.cmd, s.stopped = cmd, stopped
			go func() { <-exited; close(stopped) }()
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("sshd exited: %v\n%s", err, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("sshd did not listen on port %d within 10s\n%s", s.Port, s.log.String())
		}
	}
}

// SSHArgs are the arguments for ssh (dj's -o sftp.args) that make the
// host SSHHost reach this server.
func (s *SSHD) SSHArgs() string { return "-F " + s.ConfigFile }

// Command is a full ssh command line (dj's -o sftp.command) that opens an
// SFTP session on this server without a configuration file.
func (s *SSHD) Command() string {
	return fmt.Sprintf("ssh -i %s -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p %d %s@127.0.0.1 -s sftp",
		s.KeyFile, s.Port, s.User)
}

// Log returns what sshd printed so far.
func (s *SSHD) Log() string { return s.log.String() }

// Sessions returns the process ids of the server's per-connection
// processes: the children of the listening sshd.
func (s *SSHD) Sessions() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	return children(s.cmd.Process.Pid)
}

// KillSessions kills every connection's server processes (each child of
// the listening sshd with everything it started), as a dropped network
// connection would end them, and keeps the server listening. It returns
// how many connections it killed.
func (s *SSHD) KillSessions() int {
	n := 0
	for _, pid := range s.Sessions() {
		tree := append(descendants(pid), pid)
		killed := false
		for _, p := range tree {
			if syscall.Kill(p, syscall.SIGKILL) == nil {
				killed = true
			}
		}
		if killed {
			n++
		}
	}
	return n
}

// PauseSessions stops (SIGSTOP) every connection's server processes: the
// connections stay open and nothing answers, as with a server or network
// that hangs. The listening server still accepts new connections.
func (s *SSHD) PauseSessions() int { return s.signalSessions(syscall.SIGSTOP) }

// ResumeSessions continues (SIGCONT) paused connections.
func (s *SSHD) ResumeSessions() int { return s.signalSessions(syscall.SIGCONT) }

func (s *SSHD) signalSessions(sig syscall.Signal) int {
	n := 0
	for _, pid := range s.Sessions() {
		for _, p := range append(descendants(pid), pid) {
			if syscall.Kill(p, sig) == nil {
				n++
			}
		}
	}
	return n
}

// SessionCommands returns the command names (as /proc/PID/comm has them)
// of every process the server runs for its connections.
func (s *SSHD) SessionCommands() []string {
	var names []string
	for _, pid := range s.Sessions() {
		for _, p := range append(descendants(pid), pid) {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); err == nil {
				names = append(names, strings.TrimSpace(string(b)))
			}
		}
	}
	return names
}

// descendants returns the ids of every process below pid.
func descendants(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		out = append(out, c)
		out = append(out, descendants(c)...)
	}
	return out
}

// Stop kills the server and its sessions and waits for it to exit, as a
// crash of the server machine would end them. Stopping a stopped server
// does nothing.
func (s *SSHD) Stop() {
	s.KillSessions()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.stopped:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.stopped
	}
	s.cmd = nil
}

// Restart starts a stopped server again on the same port with the same
// keys.
func (s *SSHD) Restart() error {
	s.mu.Lock()
	running := s.cmd != nil
	s.mu.Unlock()
	if running {
		return errors.New("sshd is running")
	}
	return s.start()
}

// children returns the ids of the processes whose parent is pid.
func children(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, err := parentOf(child)
		if err == nil && ppid == pid {
			out = append(out, child)
		}
	}
	return out
}

// parentOf reads the parent process id from /proc/pid/stat.
func parentOf(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, errors.New("malformed stat")
	}
	return strconv.Atoi(f[1])
}
