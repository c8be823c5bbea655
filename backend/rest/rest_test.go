package rest_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"testing"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/local"
	"dj/backend/mem"
	"dj/backend/rest"
)

// serve starts a server over be on 127.0.0.1 and returns its URL.
func serve(t *testing.T, be backend.Backend, opts rest.ServerOptions) string {
	t.Helper()
	srv := httptest.NewServer(rest.NewServer(be, opts))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

func TestConformanceLocal(t *testing.T) {
	conformance.Run(t, func(t *testing.T) backend.Backend {
		l := local.New(t.TempDir())
		url := serve(t, l, rest.ServerOptions{Init: l.Init})
		c, err := rest.Create(t.Context(), url, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

func TestConformanceMemWithAuth(t *testing.T) {
	conformance.Run(t, func(t *testing.T) backend.Backend {
		url := serve(t, mem.New(), rest.ServerOptions{Users: map[string]string{"alice": "secret"}})
		c, err := rest.Create(t.Context(), "http://alice:secret@"+url[len("http://"):], nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

func BenchmarkRESTOverLocal(b *testing.B) {
	l := local.New(b.TempDir())
	srv := httptest.NewServer(rest.NewServer(l, rest.ServerOptions{Init: l.Init}))
	defer srv.Close()
	c, err := rest.Create(b.Context(), srv.URL, nil)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sum := sha256.Sum256(data)
	h := backend.Handle{Type: backend.PackFile, Name: hex.EncodeToString(sum[:])}
	b.Run("Save16MiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if err := c.Save(b.Context(), h, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Load16MiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := c.Load(b.Context(), h, 0, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Load1MiBRange", func(b *testing.B) {
		b.SetBytes(1 << 20)
		for b.Loop() {
			if _, err := c.Load(b.Context(), h, 5<<20, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Stat", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Stat(b.Context(), h); err != nil {
				b.Fatal(err)
			}
		}
	})
}
