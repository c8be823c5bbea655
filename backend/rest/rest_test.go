package rest_test

import (
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
