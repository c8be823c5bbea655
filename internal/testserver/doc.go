// Package testserver starts the real servers that tests of remote
// repositories run against (restic's rest-server, OpenSSH's sshd, an S3
// server), each on 127.0.0.1 with a free port, built or found once and
// stopped when the test ends, and a proxy that delays their traffic as a
// network would. Tests import it, and so does the benchmark harness
// (integration/bench), which passes its own TB.
package testserver

// TB is the part of testing.TB the servers use: *testing.T and
// *testing.B satisfy it, and a program that is not a test can provide its
// own (Fatal and Skip must not return: call runtime.Goexit or panic).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Skip(args ...any)
	Cleanup(func())
	TempDir() string
}
