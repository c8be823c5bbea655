// Package testserver starts the real servers that tests of remote
// repositories run against (restic's rest-server, OpenSSH's sshd, an S3
// server), each on 127.0.0.1 with a free port, built or found once and
// stopped when the test ends. Only tests import it.
package testserver
