package location

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"dj/backend/limit"
)

// TestRESTConnections sends many requests at once through the client
// that -o rest.connections=2 gives and counts the server's connections.
func TestRESTConnections(t *testing.T) {
	if restHTTPClient(map[string]string{}, limit.Rates{}, nil) != nil {
		t.Error("without options the REST backend's own client should be used")
	}
	var mu sync.Mutex
	active, most := 0, 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			active++
			most = max(most, active)
		case http.StateClosed, http.StateHijacked:
			active--
		}
	}
	srv.Start()
	defer srv.Close()

	hc := restHTTPClient(map[string]string{"rest.connections": "2"}, limit.Rates{}, nil)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
			resp, err := hc.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if most > 2 || most == 0 {
		t.Errorf("%d connections at once, want at most 2", most)
	}
}
