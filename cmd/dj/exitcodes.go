package main

import (
	"errors"
	"net/url"
	"strings"

	"dj/backend"
	"dj/backend/s3"
)

// remoteExitCode is the exit code of an error that is none of restic's:
// the failures to reach or use a remote repository get codes of their
// own, anything else exitError.
func remoteExitCode(err error) int {
	switch {
	case errors.Is(err, s3.ErrNoBucket):
		return exitNoRepository
	case errors.Is(err, backend.ErrHostKey):
		return exitHostKey
	case errors.Is(err, backend.ErrAuth):
		return exitAuth
	case backend.IsUnreachable(err):
		return exitUnreachable
	case errors.Is(err, backend.ErrDenied):
		return exitDenied
	}
	return exitError
}

// withRemoteHint adds to msg, the one line of err, what to do about a
// failure to reach or use a remote repository, unless msg says already.
func withRemoteHint(err error, msg string) string {
	if strings.Contains(msg, "(check ") || strings.Contains(msg, ": check ") || strings.Contains(msg, "verify ") ||
		strings.Contains(msg, "(the server may") {
		return msg
	}
	switch remoteExitCode(err) {
	case exitUnreachable:
		return msg + " (the server does not answer: check the address and the network, and that the server runs; then run the command again)"
	case exitAuth:
		return msg + " (check the user and the password, key or secret)"
	case exitHostKey:
		return msg + " (verify the server's host key and update known_hosts)"
	case exitDenied:
		return msg + " (check the permissions the server gives these credentials)"
	}
	return msg
}

// redactLocation returns loc without the password of a URL in it
// ("rest:http://user:secret@host/" becomes "rest:http://user@host/"), for
// messages.
func redactLocation(loc string) string {
	scheme, rest, ok := strings.Cut(loc, ":")
	if !ok {
		return loc
	}
	u, err := url.Parse(rest)
	if err != nil || u.User == nil {
		return loc
	}
	if _, has := u.User.Password(); !has {
		return loc
	}
	u.User = url.User(u.User.Username())
	return scheme + ":" + u.String()
}
