package integration

// End-to-end tests of dj through injected transient failures: the built
// binary, in its insecure test mode, arms the fault-injecting wrapper
// from DJ_TEST_FAULTS inside a retry layer.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// faultSpec fails one call in ten, reproducibly, with short retry waits.
const faultSpec = "DJ_TEST_FAULTS=rate=0.1,seed=10,delay=5ms"

// backupRestoreUnderFaults runs a backup and a restore with 10% of the
// backend's calls failing, compares the restore byte for byte and runs
// check --read-data without and with faults.
func backupRestoreUnderFaults(t *testing.T, e *env, pre ...string) {
	t.Helper()
	args := func(a ...string) []string { return append(append([]string{}, pre...), a...) }
	src := filepath.Join(e.dir, "src")
	big := randomData(10, 3<<20)
	writeFile(t, filepath.Join(src, "big"), big)
	for i := 0; i < 20; i++ {
		writeFile(t, filepath.Join(src, "d", string(rune('a'+i))), bytes.Repeat([]byte{byte(i)}, 1000+i))
	}
	faulty := func(a ...string) string {
		t.Helper()
		r := e.runEnv([]string{faultSpec}, args(append([]string{"-v"}, a...)...)...)
		if r.code != 0 {
			t.Fatalf("dj %s under faults: exit %d\n%s", strings.Join(a, " "), r.code, r.stderr)
		}
		return r.stderr
	}
	retries := strings.Count(faulty("backup", src), "retrying")
	target := filepath.Join(e.dir, "restored")
	retries += strings.Count(faulty("restore", "latest", "--target", target), "retrying")
	if retries == 0 {
		t.Fatal("no call failed: the faults were not armed")
	}
	t.Logf("%d retries healed injected failures", retries)
	got, err := os.ReadFile(filepath.Join(target, src, "big"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("restored big: %d bytes, %v", len(got), err)
	}
	for i := 0; i < 20; i++ {
		name := filepath.Join("d", string(rune('a'+i)))
		if got, err := os.ReadFile(filepath.Join(target, src, name)); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 1000+i)) {
			t.Fatalf("restored %s: %v", name, err)
		}
	}
	e.must(args("check", "--read-data")...)
	faulty("check", "--read-data")
	if n := snapshotCount(t, e.must(args("snapshots", "--json")...)); n != 1 {
		t.Fatalf("%d snapshots, want 1", n)
	}
}

// TestFaultsLocal: 10% transient failures on a local repository.
func TestFaultsLocal(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	backupRestoreUnderFaults(t, e)
}

// TestFaultsS3: 10% transient failures on a repository in a bucket.
func TestFaultsS3(t *testing.T) {
	e, _, _ := s3Env(t)
	backupRestoreUnderFaults(t, e)
}

// TestFaultsSFTP: 10% transient failures on a repository on an SFTP server.
func TestFaultsSFTP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sshd")
	}
	s := newSFTPEnv(t)
	s.must("init")
	backupRestoreUnderFaults(t, s.env, "-o", s.opt)
}
