// The answers of a server as errors, and failed exchanges with it.

package rest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"syscall"

	"dj/backend"
)

// StatusError is an unexpected HTTP answer. It unwraps to fs.ErrNotExist
// for 404, io.ErrUnexpectedEOF for 416, fs.ErrPermission for 401 and 403,
// and syscall.ENOSPC for 507 (the server's disk is full).
type StatusError struct {
	Handle backend.Handle
	Code   int    // HTTP status code
	Text   string // the start of the response body
}

func (e *StatusError) Error() string {
	if msg, ok := quotaMessage(e); ok {
		return msg
	}
	msg := fmt.Sprintf("server answered %d %s", e.Code, http.StatusText(e.Code))
	switch e.Code {
	case http.StatusUnauthorized:
		msg += " (check the user and password in the repository URL)"
	case http.StatusForbidden:
		msg += " (the server may be append-only)"
	case http.StatusInsufficientStorage:
		msg += " (the server's disk is full)"
	}
	if t := strings.TrimSpace(e.Text); t != "" && t != http.StatusText(e.Code) {
		msg += ": " + t
	}
	return msg
}

// Unwrap maps the status to the error the backend.Backend contract and
// callers test for; 401 is also backend.ErrAuth.
func (e *StatusError) Unwrap() []error {
	err := e.unwrap()
	switch {
	case err == nil:
		return nil
	case e.Code == http.StatusUnauthorized:
		return []error{err, backend.ErrAuth}
	case e.Code == http.StatusForbidden:
		return []error{err, backend.ErrDenied}
	}
	return []error{err}
}

func (e *StatusError) unwrap() error {
	switch e.Code {
	case http.StatusNotFound:
		return fs.ErrNotExist
	case http.StatusRequestedRangeNotSatisfiable:
		return io.ErrUnexpectedEOF
	case http.StatusUnauthorized, http.StatusForbidden:
		return fs.ErrPermission
	case http.StatusInsufficientStorage:
		return syscall.ENOSPC
	}
	return nil
}

// Permanent reports whether retrying the request cannot help: every 4xx
// status except 408 (timeout) and 429 (too many requests), and 507.
func (e *StatusError) Permanent() bool {
	switch {
	case e.Code == http.StatusRequestTimeout, e.Code == http.StatusTooManyRequests:
		return false
	case e.Code >= 400 && e.Code < 500, e.Code == http.StatusInsufficientStorage:
		return true
	}
	return false
}

// errorText reads the start of an error response's body.
func errorText(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	return strings.ToValidUTF8(strings.TrimSpace(string(b)), "?")
}

// fail turns a non-success response into a StatusError and closes it.
func fail(resp *http.Response, h backend.Handle) error {
	err := &StatusError{Handle: h, Code: resp.StatusCode, Text: errorText(resp)}
	discard(resp)
	return err
}

// discard drains a little of the body, so that the connection can be
// reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// transportError wraps a failure to exchange a request with the server.
// A lost connection shows up as io.ErrUnexpectedEOF inside net/http; it is
// kept out of the chain, because callers read that error as "range past
// the end of the file", which a retry cannot fix.
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return backend.NewClassError("connection lost: "+err.Error(), backend.ErrUnreachable)
	}
	return err
}

// ErrUntrustedCertificate is in the chain of an error when the server's
// TLS certificate could not be verified (self-signed, or signed by an
// authority the client was not given); so is backend.ErrHostKey, the
// class of a server whose identity the client cannot confirm.
var ErrUntrustedCertificate = errors.New("server certificate not trusted")

// ErrTLSRefused is in the chain of an error when the server ended the TLS
// handshake with an alert (it wants a client certificate, or refused the
// one given); so is backend.ErrAuth.
var ErrTLSRefused = errors.New("TLS handshake refused by the server")

// tlsError is a failed TLS handshake that no retry can cure: the
// server's certificate is not trusted, or the server refused the
// client's (or wanted one).
type tlsError struct {
	err       error
	untrusted bool
}

func (e *tlsError) Error() string {
	if e.untrusted {
		return ErrUntrustedCertificate.Error() + ": " + e.err.Error()
	}
	return ErrTLSRefused.Error() + ": " + e.err.Error()
}

func (e *tlsError) Unwrap() []error {
	if e.untrusted {
		return []error{ErrUntrustedCertificate, backend.ErrHostKey, e.err}
	}
	return []error{ErrTLSRefused, backend.ErrAuth, e.err}
}

// Permanent tells the retry layer not to try again.
func (e *tlsError) Permanent() bool { return true }

// certificateError returns err as a *tlsError when it is a failed
// verification of the server's certificate or an alert from the server
// during the handshake, and nil otherwise.
func certificateError(err error) error {
	var (
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		op        *net.OpError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &authority), errors.As(err, &hostname), errors.As(err, &invalid):
		return &tlsError{err: err, untrusted: true}
	case errors.As(err, &op) && op.Op == "remote error": // a TLS alert from the server
		return &tlsError{err: err}
	}
	return nil
}
