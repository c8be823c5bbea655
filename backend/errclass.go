package backend

import (
	"context"
	"errors"
	"net"
	"syscall"
)

// Classes of failures to reach or use a remote repository, for errors.Is.
// A backend's errors wrap one of them (besides the fs and io errors of the
// Backend contract) so that the CLI can tell the user what to do and exit
// with a code of its own.
var (
	// ErrUnreachable: the server did not answer (connection refused or
	// reset, no route, time-out, unknown host).
	ErrUnreachable = errors.New("server unreachable")
	// ErrAuth: the server refused the credentials (a wrong password, key
	// or secret).
	ErrAuth = errors.New("authentication failed")
	// ErrHostKey: the server's identity is not the one the client knows
	// (an SSH host key that differs from known_hosts).
	ErrHostKey = errors.New("host key verification failed")
	// ErrDenied: the server knows the credentials and refuses the request
	// (a bucket policy, an append-only server).
	ErrDenied = errors.New("request denied")
)

// classified is an error with its own message that unwraps to a class.
type classified struct {
	msg   string
	class error
}

func (e *classified) Error() string { return e.msg }
func (e *classified) Unwrap() error { return e.class }

// NewClassError returns an error with message msg that satisfies
// errors.Is(err, class): a backend's own sentinel error in a class.
func NewClassError(msg string, class error) error { return &classified{msg: msg, class: class} }

// IsUnreachable reports whether err is, or is caused by, a failure to
// reach a server: ErrUnreachable, a refused, reset or timed-out
// connection, a missing route or an unknown host name. An expired context
// is not: the caller's deadline ended the operation.
func IsUnreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, ErrUnreachable) {
		return true
	}
	for _, errno := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH,
		syscall.ENETUNREACH, syscall.ETIMEDOUT, syscall.EHOSTDOWN} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
