package limit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/fault"
	"dj/backend/local"
	"dj/backend/mem"
	"dj/backend/rest"
)

func TestConformance(t *testing.T) {
	for name, r := range map[string]Rates{"unlimited": {}, "fast": {Upload: 1 << 30, Download: 1 << 30}} {
		t.Run(name, func(t *testing.T) {
			conformance.Run(t, func(t *testing.T) backend.Backend { return New(mem.New(), r) })
		})
	}
}

func TestBucketReserve(t *testing.T) {
	start := time.Now()
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	b := newBucket(1000) // 1000 B/s, burst 100 B
	b.last = start
	steps := []struct {
		ms, n int
		want  time.Duration
	}{
		{0, 100, 0},                           // the burst is free
		{0, 50, 50 * time.Millisecond},        // then debt: 50 B at 1000 B/s
		{0, 50, 100 * time.Millisecond},       // a second taker queues behind
		{100, 0, 0},                           // the debt has drained by now
		{1000, 100, 0},                        // idle refills only up to the burst
		{1000, 1, time.Millisecond},           // ... not beyond
		{1000, 1000, 1001 * time.Millisecond}, // one large take waits for all of it
	}
	for i, s := range steps {
		if got := b.reserve(at(s.ms), s.n); got != s.want {
			t.Errorf("step %d (%d B at %d ms): wait %v, want %v", i, s.n, s.ms, got, s.want)
		}
	}
	if newBucket(0) != nil || newBucket(-1) != nil {
		t.Error("a rate of 0 or less must mean no limit")
	}
	var nilBucket *bucket
	if err := nilBucket.wait(context.Background(), 1<<30); err != nil {
		t.Error(err)
	}
}

func packHandle(data []byte) backend.Handle {
	sum := sha256.Sum256(data)
	return backend.Handle{Type: backend.PackFile, Name: hex.EncodeToString(sum[:])}
}

// The rate tests move 256 KiB at 512 KiB/s: the burst (0.1 s worth) is
// free, the rest takes at least 0.4 s. Only the lower bound is checked, so
// a busy machine cannot fail them.
const (
	testRate = 512 << 10
	testSize = 256 << 10
	minTime  = 390 * time.Millisecond
)

func TestSaveLoadBounded(t *testing.T) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("x"), testSize)
	h := packHandle(data)

	up := New(mem.New(), Rates{Upload: testRate})
	start := time.Now()
	for i := range 4 { // several calls share the rate
		if err := up.Save(ctx, h, data[i*testSize/4:(i+1)*testSize/4]); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < minTime {
		t.Errorf("saved %d bytes at %d B/s in %v, want at least %v", testSize, testRate, d, minTime)
	}

	be := mem.New()
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	down := New(be, Rates{Download: testRate})
	start = time.Now()
	got, err := down.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < minTime {
		t.Errorf("loaded %d bytes at %d B/s in %v, want at least %v", testSize, testRate, d, minTime)
	}
	if !bytes.Equal(got, data) {
		t.Error("loaded data differs")
	}
	if down.Unwrap() != be {
		t.Error("Unwrap does not return the wrapped backend")
	}
}

func TestErrorsPassThrough(t *testing.T) {
	ctx := context.Background()
	f := fault.New(mem.New())
	b := New(f, Rates{Upload: 1 << 20, Download: 1 << 20})
	h := packHandle([]byte("a"))
	boom := errors.New("boom")

	f.Add(fault.Rule{Op: fault.Save, Err: boom})
	if err := b.Save(ctx, h, []byte("a")); !errors.Is(err, boom) {
		t.Errorf("save: %v, want %v", err, boom)
	}
	if _, err := b.Load(ctx, h, 0, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("load of a missing file: %v, want fs.ErrNotExist", err)
	}
	if err := b.Save(ctx, h, []byte("a")); err != nil {
		t.Fatal(err)
	}
	f.Add(fault.Rule{Op: fault.Load, Err: boom})
	if _, err := b.Load(ctx, h, 0, 0); !errors.Is(err, boom) {
		t.Errorf("load: %v, want %v", err, boom)
	}
	if _, err := b.Stat(ctx, backend.Handle{Type: backend.PackFile, Name: packHandle(nil).Name}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat: %v, want fs.ErrNotExist", err)
	}
}

// TestCancelWhileWaiting: a call that waits for its turn ends at once when
// its context does.
func TestCancelWhileWaiting(t *testing.T) {
	b := New(mem.New(), Rates{Upload: 1024}) // 1 MiB would take 17 minutes
	data := make([]byte, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.Save(ctx, packHandle(data), data)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Save returned after %v", d)
	}
}

// TestTransport runs the REST client over a paced transport against a
// real REST server: uploads and downloads are bounded and intact.
func TestTransport(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(rest.NewServer(mem.New(), rest.ServerOptions{}))
	t.Cleanup(srv.Close)
	hc := &http.Client{Transport: Transport(http.DefaultTransport, Rates{Upload: testRate, Download: testRate})}
	c, err := rest.Create(ctx, srv.URL+"/", hc)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, testSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	h := packHandle(data)

	start := time.Now()
	if err := c.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < minTime {
		t.Errorf("uploaded %d bytes at %d B/s in %v, want at least %v", testSize, testRate, d, minTime)
	}
	start = time.Now()
	got, err := c.Load(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < minTime {
		t.Errorf("downloaded %d bytes at %d B/s in %v, want at least %v", testSize, testRate, d, minTime)
	}
	if !bytes.Equal(got, data) {
		t.Error("downloaded data differs")
	}
	if _, err := c.Load(ctx, packHandle([]byte("missing")), 0, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("load of a missing file: %v, want fs.ErrNotExist", err)
	}
	if rt := Transport(http.DefaultTransport, Rates{}); rt != http.DefaultTransport {
		t.Error("an unlimited Transport should be the one passed in")
	}
}

// TestWrapKeepsLocalFastPathsPaced: a rate limit around the local backend
// keeps its capabilities (found first, on the limiter, by backend.As) and
// paces the bytes they move.
func TestWrapKeepsLocalFastPathsPaced(t *testing.T) {
	ctx := context.Background()
	l, err := local.Create(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 256<<10)
	h := backend.Handle{Type: backend.PackFile, Name: "00aa"}
	if err := l.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	be := Wrap(l, Rates{Download: 512 << 10})
	rl, ok := backend.As[backend.RangeLoader](be)
	if !ok {
		t.Fatal("the limiter hides the local backend's RangeLoader")
	}
	if _, isLocal := rl.(*local.Local); isLocal {
		t.Fatal("backend.As reaches beneath the limiter: LoadRange would not be paced")
	}
	if _, ok := backend.As[backend.Stager](be); !ok {
		t.Fatal("the limiter hides the local backend's Stager")
	}
	start := time.Now()
	got, err := rl.LoadRange(ctx, h, 0, len(data), make([]byte, len(data)+backend.RangeSlack))
	if err != nil || len(got) != len(data) {
		t.Fatalf("LoadRange: %d bytes, %v", len(got), err)
	}
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Fatalf("256 KiB at 512 KiB/s through LoadRange took %v", d)
	}
	// Around a backend without them, Wrap offers none.
	if _, ok := backend.As[backend.RangeLoader](Wrap(mem.New(), Rates{Download: 1 << 20})); ok {
		t.Fatal("a limited mem backend claims RangeLoader")
	}
}

// rangedRemote is a backend with ranged loads but not the rest of the local
// disk's capabilities, as the S3 backend.
type rangedRemote struct{ backend.Backend }

func (r rangedRemote) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	return r.Load(ctx, h, offset, length)
}

func (r rangedRemote) LoadInto(ctx context.Context, h backend.Handle, offset int64, buf []byte) error {
	b, err := r.Load(ctx, h, offset, len(buf))
	copy(buf, b)
	return err
}

// TestWrapPacesRemoteRangedLoads: the ranged loads of a remote backend
// (S3's, which restore, check and the mount use) are paced, not found
// beneath the limiter.
func TestWrapPacesRemoteRangedLoads(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 256<<10)
	h := backend.Handle{Type: backend.PackFile, Name: "00aa"}
	under := rangedRemote{mem.New()}
	if err := under.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	be := Wrap(under, Rates{Download: 512 << 10})
	if _, ok := backend.As[backend.Stager](be); ok {
		t.Fatal("the limiter claims a Stager the backend lacks")
	}
	rl, ok := backend.As[backend.RangeLoader](be)
	if !ok {
		t.Fatal("the limiter hides the backend's RangeLoader")
	}
	if _, beneath := rl.(rangedRemote); beneath {
		t.Fatal("backend.As reaches beneath the limiter: LoadRange would not be paced")
	}
	il, ok := backend.As[backend.IntoLoader](be)
	if !ok {
		t.Fatal("the limiter hides the backend's IntoLoader")
	}
	if _, beneath := il.(rangedRemote); beneath {
		t.Fatal("backend.As reaches beneath the limiter: LoadInto would not be paced")
	}
	// The bucket starts with a burst; then 512 KiB take about a second.
	start := time.Now()
	for range 2 {
		if got, err := rl.LoadRange(ctx, h, 0, len(data), nil); err != nil || len(got) != len(data) {
			t.Fatalf("LoadRange: %d bytes, %v", len(got), err)
		}
	}
	buf := make([]byte, len(data))
	if err := il.LoadInto(ctx, h, 0, buf); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 1200*time.Millisecond {
		t.Fatalf("768 KiB at 512 KiB/s through LoadRange and LoadInto took %v", d)
	}
}
