package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"dj/backend"
	"dj/backend/fault"
	"dj/backend/location"
	"dj/backend/retry"
)

// withTestFaults passes the result of opening a location through, except
// in the insecure test mode (DJ_INSECURE_TEST_KDF=1) with DJ_TEST_FAULTS
// set: then the backend fails at random as the spec says (see
// fault.ParseSpec), and a retry layer around the faults heals them, as the
// registry's retry layer heals a flaky network. The end-to-end tests use it
// to run whole commands through transient failures; users never meet it.
func (e *env) withTestFaults(be backend.Backend, s location.Scheme, err error) (backend.Backend, location.Scheme, error) {
	spec := os.Getenv(fault.EnvVar)
	if err != nil || spec == "" || os.Getenv("DJ_INSECURE_TEST_KDF") != "1" {
		return be, s, err
	}
	sp, perr := fault.ParseSpec(spec)
	if perr != nil {
		be.Close()
		return nil, s, fmt.Errorf("%s: %w", fault.EnvVar, perr)
	}
	f := fault.New(be)
	sp.Arm(f)
	opts := retry.Options{InitialDelay: sp.Delay, Notify: func(op string, h backend.Handle, attempt int, err error, wait time.Duration) {
		if e.verbose {
			e.warnf("retrying %s %s after error (attempt %d): %v\n", op, h, attempt, err)
		}
	}}
	return retry.Wrap(fault.Opaque(f), opts), s, nil
}

// testTimeoutEnv names the variable with which the end-to-end tests
// shorten the stall timeouts of the remote backends (a DURATION) in the
// insecure test mode, so that a test of a stalled network need not wait
// the minutes a user's dj waits.
const testTimeoutEnv = "DJ_TEST_TIMEOUT"

// withTestTimeout returns ctx carrying the stall timeout of
// DJ_TEST_TIMEOUT in the insecure test mode (DJ_INSECURE_TEST_KDF=1), and
// ctx itself otherwise.
func withTestTimeout(ctx context.Context) context.Context {
	v := os.Getenv(testTimeoutEnv)
	if v == "" || os.Getenv("DJ_INSECURE_TEST_KDF") != "1" {
		return ctx
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return backend.WithStallTimeout(ctx, d)
	}
	return ctx
}

// testRetryEnv names the variable with which the end-to-end tests shorten
// the retry layer in the insecure test mode: "attempts=N,delay=DURATION",
// so that a test of a server that stays down need not wait minutes.
const testRetryEnv = "DJ_TEST_RETRY"

// withTestRetry returns o changed by DJ_TEST_RETRY in the insecure test
// mode (DJ_INSECURE_TEST_KDF=1), and o itself otherwise. Malformed
// values are ignored: only tests set it.
func withTestRetry(o retry.Options) retry.Options {
	v := os.Getenv(testRetryEnv)
	if v == "" || os.Getenv("DJ_INSECURE_TEST_KDF") != "1" {
		return o
	}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "attempts":
			if n, err := strconv.Atoi(val); err == nil {
				o.MaxAttempts = n
			}
		case "delay":
			if d, err := time.ParseDuration(val); err == nil {
				o.InitialDelay, o.MaxDelay = d, d
			}
		}
	}
	return o
}
