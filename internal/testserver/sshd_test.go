package testserver

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSSHD(t *testing.T) {
	s := StartSSHD(t)
	out, err := exec.Command("ssh", "-F", s.ConfigFile, SSHHost, "echo", "hello").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("ssh through the config file: %v\n%s\nsshd log:\n%s", err, out, s.Log())
	}
	args := strings.Fields(s.Command())
	args = args[:len(args)-2] // without "-s sftp"
	out, err = exec.Command(args[0], append(args[1:], "echo", "again")...).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "again" {
		t.Fatalf("ssh through the command: %v\n%s", err, out)
	}

	// A session that is killed ends the client's connection.
	cmd := exec.Command("ssh", "-F", s.ConfigFile, SSHHost, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(s.SessionCommands(), "sleep") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.KillSessions(); n == 0 {
		t.Fatal("no session to kill")
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ssh succeeded after its session was killed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ssh still runs after its session was killed")
	}

	s.Stop()
	if err := exec.Command("ssh", "-F", s.ConfigFile, SSHHost, "true").Run(); err == nil {
		t.Fatal("ssh reached a stopped server")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ssh", "-F", s.ConfigFile, SSHHost, "true").CombinedOutput(); err != nil {
		t.Fatalf("ssh after Restart: %v\n%s", err, out)
	}
}
