package testserver

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// RestartS3Server starts versitygw again, after s.Stop, on s's address
// with s's credentials and buckets, as a server that comes back after a
// crash. The new process ends when the test does.
func RestartS3Server(t testing.TB, s *S3Server) {
	t.Helper()
	bin := S3ServerBinary(t)
	versions := filepath.Join(filepath.Dir(s.Dir), "versions")
	cmd := exec.Command(bin,
		"--port", s.Addr, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--region", s.Region, "--keep-alive", "--quiet",
		"posix", "--versioning-dir", versions, s.Dir)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Dir(s.Dir)}
	log := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not start again on %s:\n%s", s.Addr, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
