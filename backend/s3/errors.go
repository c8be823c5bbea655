package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"

	"dj/backend"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// Errors a caller can test for with errors.Is, beside the fs and io errors
// of the backend.Backend contract.
var (
	// ErrNoBucket: the bucket of the location does not exist.
	ErrNoBucket = errors.New("bucket does not exist")
	// ErrNoCredentials: the AWS environment, config and profiles hold no
	// credentials.
	ErrNoCredentials = errors.New("no AWS credentials")
	// ErrUnreachable: the endpoint did not answer.
	ErrUnreachable = backend.NewClassError("endpoint unreachable", backend.ErrUnreachable)
)

// Error is an error answer of the S3 server. It unwraps to fs.ErrNotExist
// for a missing object, io.ErrUnexpectedEOF for a range past the end,
// fs.ErrPermission for a denied request and ErrNoBucket for a missing
// bucket.
type Error struct {
	Status  int    // HTTP status
	Code    string // S3 error code, such as AccessDenied
	Message string // the server's message
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("server answered %d", e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if m := strings.TrimSpace(e.Message); m != "" && m != e.Code {
		msg += ": " + m
	}
	switch {
	case e.denied():
		msg += " (check the credentials, their region and the bucket's policy)"
	case e.Code == "NoSuchBucket":
		msg += " (dj init creates the bucket)"
	}
	return msg
}

func (e *Error) denied() bool {
	switch e.Code {
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
		"InvalidToken", "ExpiredToken", "Forbidden", "AccountProblem",
		"XAdminUserNotFound": // versitygw's answer (404) to an unknown access key
		return true
	}
	return e.Status == http.StatusForbidden || e.Status == http.StatusUnauthorized
}

// badCredentials reports whether the server refused the credentials
// themselves (not a policy that denies a request to a known user).
func (e *Error) badCredentials() bool {
	switch e.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "XAdminUserNotFound":
		return true
	}
	return e.Status == http.StatusUnauthorized
}

// Unwrap maps the answer to the errors of the backend.Backend contract;
// refused credentials are also backend.ErrAuth.
func (e *Error) Unwrap() []error {
	if err := e.unwrap(); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			if e.badCredentials() {
				return []error{err, backend.ErrAuth}
			}
			return []error{err, backend.ErrDenied}
		}
		return []error{err}
	}
	return nil
}

func (e *Error) unwrap() error {
	switch {
	case e.Code == "NoSuchBucket":
		return ErrNoBucket
	case e.denied():
		return fs.ErrPermission
	case e.Code == "NoSuchKey", e.Code == "NotFound", e.Status == http.StatusNotFound:
		return fs.ErrNotExist
	case e.Code == "InvalidRange", e.Status == http.StatusRequestedRangeNotSatisfiable:
		return io.ErrUnexpectedEOF
	}
	return nil
}

// Permanent reports whether retrying cannot help: every 4xx answer but
// timeouts and throttling.
func (e *Error) Permanent() bool {
	switch e.Code {
	case "RequestTimeout", "SlowDown", "Throttling", "ThrottlingException", "RequestTimeTooSkewed",
		"InternalError", "ServiceUnavailable":
		return false
	}
	switch e.Status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return e.Status >= 400 && e.Status < 500
}

// permanentError marks an error a retry cannot cure (an object under
// retention) for the retry decorator.
type permanentError struct{ error }

func (e permanentError) Unwrap() error   { return e.error }
func (e permanentError) Permanent() bool { return true }

// convert turns an error of the SDK into one of this package: an *Error
// for an answer of the server, the context's error when it ended, and an
// ErrUnreachable error when the server did not answer at all.
func convert(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), short(err))
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil && re.HTTPStatusCode() > 0 {
		if re.HTTPStatusCode() < 300 {
			// A success whose body could not be read (a stalled or
			// dropped connection halfway through a listing): a retry
			// may cure it.
			return fmt.Errorf("%w: reading the answer: %s", ErrUnreachable, strings.ReplaceAll(short(err), io.ErrUnexpectedEOF.Error(), "connection lost"))
		}
		e := &Error{Status: re.HTTPStatusCode()}
		var api smithy.APIError
		if errors.As(err, &api) {
			e.Code, e.Message = api.ErrorCode(), api.ErrorMessage()
		}
		if e.Code == "" || e.Code == "UnknownError" {
			e.Code = codeOfStatus(e.Status)
		}
		return e
	}
	if isCredentialsError(err) {
		return fmt.Errorf("%w: %v", ErrNoCredentials, short(err))
	}
	// No answer: a refused or timed-out connection, a TLS or DNS failure.
	// Not io.ErrUnexpectedEOF: callers read that as a range past the end.
	return fmt.Errorf("%w: %s", ErrUnreachable, strings.ReplaceAll(short(err), io.ErrUnexpectedEOF.Error(), "connection lost"))
}

// codeOfStatus names a bodiless answer (HEAD) by its status.
func codeOfStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return "NotFound"
	case http.StatusForbidden:
		return "Forbidden"
	case http.StatusMovedPermanently:
		return "PermanentRedirect"
	}
	return http.StatusText(status)
}

// isCredentialsError recognises the SDK's failure to find credentials.
func isCredentialsError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "failed to refresh cached credentials") ||
		strings.Contains(s, "no EC2 IMDS role found") ||
		strings.Contains(s, "static credentials are empty")
}

// short drops the SDK's "operation error S3: X, https response error
// StatusCode: ..., RequestID: ..." wrapping down to its cause.
func short(err error) string {
	var op *smithy.OperationError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Err != nil {
		err = re.Err
	}
	return err.Error()
}
