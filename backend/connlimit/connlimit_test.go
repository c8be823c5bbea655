package connlimit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/connlimit"
	"dj/backend/local"
	"dj/backend/mem"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) backend.Backend { return connlimit.Wrap(mem.New(), 2) })
}

// slow is a mem backend whose loads take a while and count how many run
// at once.
type slow struct {
	*mem.Backend
	running, most atomic.Int32
}

func (s *slow) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	n := s.running.Add(1)
	defer s.running.Add(-1)
	for {
		m := s.most.Load()
		if n <= m || s.most.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(20 * time.Millisecond)
	return s.Backend.Load(ctx, h, offset, length)
}

func TestBoundsConcurrency(t *testing.T) {
	s := &slow{Backend: mem.New()}
	ctx := context.Background()
	h := backend.Handle{Type: backend.IndexFile, Name: "abcd"}
	if err := s.Save(ctx, h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	be := connlimit.Wrap(s, 3)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := be.Load(ctx, h, 0, 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if m := s.most.Load(); m != 3 {
		t.Errorf("%d loads ran at once, want 3", m)
	}

	// A call waiting for a place ends with its context.
	one := connlimit.Wrap(s, 1)
	go one.Load(ctx, h, 0, 0)
	time.Sleep(5 * time.Millisecond)
	tctx, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	if _, err := one.Load(tctx, h, 0, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting Load: %v, want context.DeadlineExceeded", err)
	}
}

func TestKeepsCapabilities(t *testing.T) {
	l, err := local.Create(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	be := connlimit.Wrap(l, 2)
	if _, ok := be.(backend.Stager); !ok {
		t.Error("local's Stager is not kept")
	}
	if _, ok := be.(backend.RangeLoader); !ok {
		t.Error("local's RangeLoader is not kept")
	}
	if _, ok := connlimit.Wrap(mem.New(), 2).(backend.RangeLoader); ok {
		t.Error("a RangeLoader claimed for mem")
	}
	if connlimit.Wrap(l, 0) != backend.Backend(l) {
		t.Error("connections=0 wraps")
	}
}
