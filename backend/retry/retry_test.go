package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/fault"
	"dj/backend/mem"
	"dj/backend/rest"
	"dj/backend/retry"
)

var fast = retry.Options{MaxAttempts: 5, InitialDelay: time.Millisecond, MaxDelay: 4 * time.Millisecond}

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) backend.Backend { return retry.New(mem.New(), fast) })
}

// TestConformanceFlaky runs the suite over a backend that fails every
// third save, load and stat: the retries hide all of it. (Not remove: a
// retried Remove that finds the file gone succeeds, and the suite checks
// that removing twice fails.)
func TestConformanceFlaky(t *testing.T) {
	conformance.Run(t, func(t *testing.T) backend.Backend {
		f := fault.New(mem.New())
		for _, op := range []fault.Op{fault.Save, fault.Load, fault.Stat} {
			f.Add(fault.Rule{Op: op, Every: 3, Times: -1})
		}
		opts := fast
		opts.MaxAttempts = 25 // concurrent callers share the count
		return retry.New(f, opts)
	})
}

func handle(name string) backend.Handle {
	return backend.Handle{Type: backend.PackFile, Name: strings.Repeat(name, 64)}
}

func TestRetriesTransientErrors(t *testing.T) {
	ctx := context.Background()
	f := fault.New(mem.New())
	var notes []string
	opts := fast
	opts.Notify = func(op string, h backend.Handle, attempt int, err error, wait time.Duration) {
		notes = append(notes, fmt.Sprintf("%s %d", op, attempt))
	}
	r := retry.New(f, opts)
	h := handle("a")
	f.Add(fault.Rule{Op: fault.Save, Times: 2})
	if err := r.Save(ctx, h, []byte("data")); err != nil {
		t.Fatalf("Save: %v", err)
	}
	f.Add(fault.Rule{Op: fault.Load, Times: 4})
	got, err := r.Load(ctx, h, 1, 2)
	if err != nil || string(got) != "at" {
		t.Fatalf("Load: %q, %v", got, err)
	}
	f.Add(fault.Rule{Op: fault.Stat, Times: 1})
	if fi, err := r.Stat(ctx, h); err != nil || fi.Size != 4 {
		t.Fatalf("Stat: %+v, %v", fi, err)
	}
	want := "save 1,save 2,load 1,load 2,load 3,load 4,stat 1"
	if strings.Join(notes, ",") != want {
		t.Errorf("notifications %v, want %s", notes, want)
	}
	if n := f.Calls(fault.Load, ""); n != 5 {
		t.Errorf("%d loads, want 5", n)
	}
}

func TestGivesUp(t *testing.T) {
	f := fault.New(mem.New())
	f.Add(fault.Rule{Op: fault.Load, Times: -1})
	r := retry.New(f, fast)
	_, err := r.Load(context.Background(), handle("b"), 0, 0)
	if !errors.Is(err, fault.ErrInjected) || !strings.Contains(err.Error(), "after 5 attempts") {
		t.Errorf("Load: %v, want the last error after 5 attempts", err)
	}
	if n := f.Calls(fault.Load, ""); n != 5 {
		t.Errorf("%d loads, want 5", n)
	}
}

type permanentErr struct{}

func (permanentErr) Error() string   { return "no use" }
func (permanentErr) Permanent() bool { return true }

func TestPermanentErrors(t *testing.T) {
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name string
		arm  func(f *fault.Backend)
		ctx  context.Context
		h    backend.Handle
		want error
	}{
		{"missing", func(*fault.Backend) {}, ctx, handle("c"), fs.ErrNotExist},
		{"invalid", func(*fault.Backend) {}, ctx, backend.Handle{Type: "bogus"}, fs.ErrInvalid},
		{"canceled", func(*fault.Backend) {}, canceled, handle("c"), context.Canceled},
		{"permission", func(f *fault.Backend) { f.FailNth(fault.Load, "", 1, fs.ErrPermission) }, ctx, handle("c"), fs.ErrPermission},
		{"disk full", func(f *fault.Backend) { f.FailNth(fault.Load, "", 1, syscall.ENOSPC) }, ctx, handle("c"), syscall.ENOSPC},
		{"quota", func(f *fault.Backend) {
			f.FailNth(fault.Load, "", 1, &fs.PathError{Op: "write", Path: "x", Err: syscall.EDQUOT})
		}, ctx, handle("c"), syscall.EDQUOT},
		{"marked", func(f *fault.Backend) { f.FailNth(fault.Load, "", 1, fmt.Errorf("wrapped: %w", permanentErr{})) }, ctx, handle("c"), permanentErr{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := fault.New(mem.New())
			tc.arm(f)
			r := retry.New(f, retry.Options{InitialDelay: time.Hour})
			start := time.Now()
			_, err := r.Load(tc.ctx, tc.h, 0, 0)
			if !errors.Is(err, tc.want) {
				t.Errorf("Load: %v, want %v", err, tc.want)
			}
			if n := f.Calls(fault.Load, ""); n != 1 || time.Since(start) > time.Minute {
				t.Errorf("%d loads: a permanent error was retried", n)
			}
		})
	}
	// A full disk on save is permanent too.
	f := fault.New(mem.New())
	f.FailSavesAfter(0)
	r := retry.New(f, retry.Options{InitialDelay: time.Hour})
	if err := r.Save(ctx, handle("d"), []byte("x")); !errors.Is(err, syscall.ENOSPC) || f.Calls(fault.Save, "") != 1 {
		t.Errorf("Save on a full disk: %v after %d calls", err, f.Calls(fault.Save, ""))
	}
}

func TestCancelDuringWait(t *testing.T) {
	f := fault.New(mem.New())
	f.Add(fault.Rule{Op: fault.Stat, Times: -1})
	r := retry.New(f, retry.Options{InitialDelay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Stat(ctx, handle("e"))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), fault.ErrInjected.Error()) {
		t.Errorf("Stat: %v, want the deadline and the last error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Stat returned after %v, not when the context ended", d)
	}
}

func TestBackoff(t *testing.T) {
	f := fault.New(mem.New())
	f.Add(fault.Rule{Op: fault.Stat, Times: -1})
	var waits []time.Duration
	r := retry.New(f, retry.Options{MaxAttempts: 7, InitialDelay: time.Millisecond, MaxDelay: 4 * time.Millisecond,
		Notify: func(_ string, _ backend.Handle, _ int, _ error, wait time.Duration) { waits = append(waits, wait) }})
	_, _ = r.Stat(context.Background(), handle("f"))
	limits := []time.Duration{1, 2, 4, 4, 4, 4}
	if len(waits) != len(limits) {
		t.Fatalf("%d waits, want %d", len(waits), len(limits))
	}
	for i, w := range waits {
		max := limits[i] * time.Millisecond
		if w < max/2 || w > max {
			t.Errorf("wait %d: %v, want between %v and %v", i, w, max/2, max)
		}
	}
}

func TestListResumes(t *testing.T) {
	ctx := context.Background()
	f := fault.New(mem.New())
	for _, n := range []string{"1", "2", "3", "4", "5"} {
		if err := f.Save(ctx, handle(n), nil); err != nil {
			t.Fatal(err)
		}
	}
	f.Add(fault.Rule{Op: fault.List, AfterItems: 2})
	f.Add(fault.Rule{Op: fault.List, Nth: 1, AfterItems: 3}) // counts the same calls: fires second
	r := retry.New(f, fast)
	seen := map[string]int{}
	if err := r.List(ctx, backend.PackFile, func(fi backend.FileInfo) error { seen[fi.Name]++; return nil }); err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(seen) != 5 {
		t.Errorf("%d files listed, want 5", len(seen))
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s listed %d times", name[:4], n)
		}
	}
	// The callback's own error ends the listing without a retry.
	stop := errors.New("stop")
	calls := f.Calls(fault.List, "")
	if err := r.List(ctx, backend.PackFile, func(backend.FileInfo) error { return stop }); err != stop {
		t.Errorf("List: %v, want the callback's error itself", err)
	}
	if f.Calls(fault.List, "")-calls != 1 {
		t.Errorf("the callback's error was retried")
	}
}

func TestLostAnswers(t *testing.T) {
	ctx := context.Background()
	inner := mem.New()
	f := fault.New(inner)
	r := retry.New(f, fast)
	h := handle("9")
	// The save happens, but its answer is lost: the retry saves again.
	f.Add(fault.Rule{Op: fault.Save, After: true})
	if err := r.Save(ctx, h, []byte("x")); err != nil {
		t.Errorf("Save: %v", err)
	}
	// The remove happens, but its answer is lost: the retry finds the
	// file gone, which is success.
	f.Add(fault.Rule{Op: fault.Remove, After: true})
	if err := r.Remove(ctx, h); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if _, err := inner.Stat(ctx, h); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("file still there: %v", err)
	}
	// A first attempt that finds nothing is an error, though.
	if err := r.Remove(ctx, h); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Remove of a missing file: %v", err)
	}
}

// TestOverREST retries a REST client against a server that answers 503
// now and then, and does not retry a 403.
func TestOverREST(t *testing.T) {
	ctx := t.Context()
	var n atomic.Int64
	inner := rest.NewServer(mem.New(), rest.ServerOptions{AppendOnly: true})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c, err := rest.Create(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := retry.New(c, fast)
	data := []byte("pack")
	h := backend.Handle{Type: backend.PackFile, Name: "e3d5b2f1a6b7bf6ba3bd8ccd2fb9a1a9a6e3bdbf4be1d0dc1c0f7a0a1d5a6a4f"}
	for i := 0; i < 10; i++ {
		// The name does not match: a permanent 400.
		if err := r.Save(ctx, h, data); err == nil || strings.Contains(err.Error(), "attempts") {
			t.Fatalf("Save with a wrong name: %v, want an immediate 400", err)
		}
	}
	cfg := backend.Handle{Type: backend.ConfigFile}
	for i := 0; i < 10; i++ {
		if err := r.Save(ctx, cfg, data); i == 0 && err != nil {
			t.Fatalf("Save config: %v", err)
		} else if i > 0 && !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("Save config again on an append-only server: %v, want fs.ErrPermission", err)
		}
		if got, err := r.Load(ctx, cfg, 0, 0); err != nil || string(got) != "pack" {
			t.Fatalf("Load config: %q, %v", got, err)
		}
	}
}

// TestRetriesResponseHeaderTimeout: a REST server that does not answer a
// save within the response-header time-out is asked again (net/http's
// time-out satisfies errors.Is(err, context.DeadlineExceeded), which
// must not read as the caller's own deadline).
func TestRetriesResponseHeaderTimeout(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 2 {
			time.Sleep(300 * time.Millisecond) // the first save: no answer in time
		}
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "10")
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	ctx := backend.WithStallTimeout(context.Background(), 100*time.Millisecond)
	c, err := rest.Open(ctx, srv.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := retry.New(c, fast)
	if err := r.Save(ctx, handle("a"), []byte("data")); err != nil {
		t.Fatalf("Save: %v (after %d requests)", err, calls.Load())
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (open, the save that timed out, its retry)", n)
	}
}
