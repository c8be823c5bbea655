package backend_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"dj/backend"
)

func TestGuardStall(t *testing.T) {
	// Data that flows is read whole.
	r := backend.GuardStall(io.NopCloser(strings.NewReader("hello")), 50*time.Millisecond)
	if b, err := io.ReadAll(r); err != nil || string(b) != "hello" {
		t.Fatalf("ReadAll: %q, %v", b, err)
	}
	// A stream that stops sending ends the read after the idle time.
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("first"))
	r = backend.GuardStall(pr, 100*time.Millisecond)
	start := time.Now()
	b, err := io.ReadAll(r)
	if string(b) != "first" || !errors.Is(err, backend.ErrUnreachable) || !backend.IsUnreachable(err) {
		t.Fatalf("ReadAll of a stalled stream: %q, %v", b, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("stalled read ended after %v", d)
	}
}
