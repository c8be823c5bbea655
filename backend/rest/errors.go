// The answers of a server as errors, and failed exchanges with it.

package rest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
