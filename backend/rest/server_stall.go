package rest

import (
	"io"
	"net/http"
	"time"

	"dj/backend"
)

// watchBody returns body with a read deadline of idle from every Read on,
// so that an upload whose client went silent fails and frees its slot
// instead of holding it for as long as the connection stays open.
func watchBody(w http.ResponseWriter, body io.ReadCloser, idle time.Duration) io.ReadCloser {
	if idle <= 0 {
		idle = backend.DefaultStallTimeout
	}
	return &idleBody{rc: http.NewResponseController(w), body: body, idle: idle}
}

type idleBody struct {
	rc   *http.ResponseController
	body io.ReadCloser
	idle time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle)) // not every connection supports it
	n, err := b.body.Read(p)
	if err != nil {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

func (b *idleBody) Close() error { return b.body.Close() }
