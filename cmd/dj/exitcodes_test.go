package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"dj/backend"
	"dj/backend/rest"
	"dj/backend/s3"
	"dj/repo"
)

func TestRemoteExitCodes(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &fs.PathError{Op: "connect", Err: syscall.ECONNREFUSED}}
	for _, tc := range []struct {
		name string
		err  error
		code int
		hint string
	}{
		{"refused", fmt.Errorf("save data/00: %w (gave up after 10 attempts)", refused), exitUnreachable, "server does not answer"},
		{"dns", &net.DNSError{Err: "no such host", Name: "nowhere"}, exitUnreachable, "server does not answer"},
		{"s3 unreachable", fmt.Errorf("%w: dial", s3.ErrUnreachable), exitUnreachable, "server does not answer"},
		{"s3 secret", &s3.Error{Status: 403, Code: "SignatureDoesNotMatch"}, exitAuth, "check the credentials"},
		{"s3 policy", &s3.Error{Status: 403, Code: "AccessDenied"}, exitDenied, "check the credentials"},
		{"s3 bucket", fmt.Errorf("loc: %w", s3.ErrNoBucket), exitNoRepository, ""},
		{"rest 401", &rest.StatusError{Code: http.StatusUnauthorized}, exitAuth, "check the user and password"},
		{"rest 403", &rest.StatusError{Code: http.StatusForbidden}, exitDenied, "append-only"},
		{"host key", fmt.Errorf("x: %w", backend.ErrHostKey), exitHostKey, "known_hosts"},
		{"local permission", &fs.PathError{Op: "open", Path: "/repo/config", Err: fs.ErrPermission}, exitError, ""},
		{"refused only in the text", fmt.Errorf("%w (last error: %v)", errors.New("x"), refused), exitError, ""},
		{"wrong password", repo.ErrWrongPassword, exitWrongPass, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.code {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.code)
			}
			if msg := withRemoteHint(tc.err, oneLine(tc.err)); !strings.Contains(msg, tc.hint) {
				t.Errorf("message %q lacks %q", msg, tc.hint)
			}
		})
	}
}

func TestRedactLocation(t *testing.T) {
	for in, want := range map[string]string{
		"rest:http://user:secret@host:8000/repo/": "rest:http://user@host:8000/repo/",
		"rest:http://user@host/":                  "rest:http://user@host/",
		"rest:http://host/":                       "rest:http://host/",
		"/srv/repo":                               "/srv/repo",
		"sftp:user@host:/srv/repo":                "sftp:user@host:/srv/repo",
		"s3:https://s3.example.com/bucket":        "s3:https://s3.example.com/bucket",
	} {
		if got := redactLocation(in); got != want {
			t.Errorf("redactLocation(%q) = %q, want %q", in, got, want)
		}
	}
}
