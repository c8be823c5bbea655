package sftp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"dj/backend/sftp"
)

// The environment of the test binary run as an SFTP "server" by
// sftp.command: strictProxyEnv makes it a strict server (runStrictProxy)
// with that message limit; keepLimitsEnv keeps OpenSSH's statement of its
// limits; largestEnv names a file where it writes the size of the largest
// message the client sent.
const (
	strictProxyEnv = "DJ_TEST_SFTP_STRICT_LIMIT"
	keepLimitsEnv  = "DJ_TEST_SFTP_KEEP_LIMITS"
	largestEnv     = "DJ_TEST_SFTP_LARGEST"
)

func TestMain(m *testing.M) {
	if v := os.Getenv(strictProxyEnv); v != "" {
		limit, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad", strictProxyEnv, v)
			os.Exit(2)
		}
		os.Exit(runStrictProxy(limit))
	}
	os.Exit(m.Run())
}

// findSFTPServer returns the path of OpenSSH's sftp-server where
// distributions put it, or "".
func findSFTPServer() string {
	for _, p := range []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// runStrictProxy stands for an SFTP server that takes messages of at most
// limit bytes and states no limits: it runs OpenSSH's sftp-server on its
// own stdin and stdout, removes limits@openssh.com from the server's
// VERSION answer (unless keepLimitsEnv is set), and ends the session (as
// such servers do) when the client sends a longer message.
func runStrictProxy(limit int) int {
	keepLimits := os.Getenv(keepLimitsEnv) != ""
	largestFile := os.Getenv(largestEnv)
	largest := 0
	path := findSFTPServer()
	if path == "" {
		fmt.Fprintln(os.Stderr, "no sftp-server")
		return 2
	}
	srv := exec.Command(path)
	toServer, _ := srv.StdinPipe()
	fromServer, _ := srv.StdoutPipe()
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go func() {
		r := bufio.NewReader(fromServer)
		w := os.Stdout
		first := true
		for {
			msg, err := readMessage(r, 1<<30)
			if err != nil {
				w.Close()
				return
			}
			if first && !keepLimits && len(msg) > 0 && msg[0] == 2 { // SSH_FXP_VERSION
				msg = withoutExtension(msg, "limits@openssh.com")
			}
			first = false
			if err := writeMessage(w, msg); err != nil {
				return
			}
		}
	}()
	r := bufio.NewReader(os.Stdin)
	for {
		msg, err := readMessage(r, limit)
		if err != nil {
			fmt.Fprintln(os.Stderr, "strict server:", err)
			toServer.Close()
			_ = srv.Process.Kill()
			_ = srv.Wait()
			if err == io.EOF {
				return 0
			}
			return 1
		}
		if len(msg) > largest && largestFile != "" {
			largest = len(msg)
			_ = os.WriteFile(largestFile, []byte(strconv.Itoa(largest)), 0o600)
		}
		if err := writeMessage(toServer, msg); err != nil {
			return 1
		}
	}
}

// readMessage reads one SFTP message (its length, then its body) of at
// most limit bytes.
func readMessage(r io.Reader, limit int) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint32(n[:]))
	if size > limit {
		return nil, fmt.Errorf("message of %d bytes, over the limit of %d", size, limit)
	}
	msg := make([]byte, size)
	_, err := io.ReadFull(r, msg)
	return msg, err
}

func writeMessage(w io.Writer, msg []byte) error {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(msg)))
	_, err := w.Write(append(n[:], msg...))
	return err
}

// withoutExtension returns a VERSION message without the named extension
// pair: type, version, then (name, data) strings.
func withoutExtension(msg []byte, name string) []byte {
	out := append([]byte(nil), msg[:5]...)
	rest := msg[5:]
	str := func() ([]byte, bool) {
		if len(rest) < 4 {
			return nil, false
		}
		n := int(binary.BigEndian.Uint32(rest))
		if len(rest) < 4+n {
			return nil, false
		}
		s := rest[:4+n]
		rest = rest[4+n:]
		return s, true
	}
	for len(rest) > 0 {
		k, ok1 := str()
		v, ok2 := str()
		if !ok1 || !ok2 {
			return msg
		}
		if string(k[4:]) != name {
			out = append(append(out, k...), v...)
		}
	}
	return out
}

// TestStrictSmallMessageServer runs the backend against a server that
// takes messages of at most 34,000 bytes (what the SFTP drafts ask every
// server to take: 32 KiB of data and the header) and does not state its
// limits, as OpenSSH's limits@openssh.com does. Writes of OpenSSH's 255
// KiB made every upload to such a server end the session ("connection
// lost"), so that no backup could be made there; packets are now 32 KiB
// unless the server states its limits, and a server that does (OpenSSH
// here) still gets 255 KiB.
func TestStrictSmallMessageServer(t *testing.T) {
	if findSFTPServer() == "" {
		t.Fatal("OpenSSH's sftp-server is not installed: run `make test-deps` (as root) or apt-get install openssh-server")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		keepLimits   bool
		limit        int
		largest      func(n int) bool
		largestWants string
	}{
		{"states no limits", false, 34000, func(n int) bool { return n <= 34000 }, "at most 34,000 bytes"},
		{"states its limits", true, 256 << 10, func(n int) bool { return n > 200<<10 }, "255 KiB writes"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			dir := t.TempDir()
			largestFile := filepath.Join(dir, "largest")
			t.Setenv(strictProxyEnv, strconv.Itoa(tc.limit))
			t.Setenv(largestEnv, largestFile)
			if tc.keepLimits {
				t.Setenv(keepLimitsEnv, "1")
			}
			cfg, err := sftp.ParseLocation("sftp:strict:"+filepath.Join(dir, "repo"), map[string]string{sftp.OptionCommand: self})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			be, err := sftp.Create(ctx, cfg)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			defer be.Close()

			name := strings.Repeat("cd", 32)
			data := saveAndLoad(t, ctx, be, name, 8)
			stored, err := os.ReadFile(filepath.Join(dir, "repo", "data", name[:2], name))
			if err != nil || !bytes.Equal(stored, data) {
				t.Errorf("the server stored %d bytes (%v), want the %d saved", len(stored), err, len(data))
			}
			b, _ := os.ReadFile(largestFile)
			if n, _ := strconv.Atoi(string(b)); !tc.largest(n) {
				t.Errorf("the largest message the client sent had %d bytes, want %s", n, tc.largestWants)
			}
		})
	}
}
