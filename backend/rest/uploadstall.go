package rest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"dj/backend"
)

// errUploadStalled ends a request whose body the connection stopped
// taking (see watchUpload).
var errUploadStalled = errors.New("upload stalled")

// watchUpload returns a request body for data and a context derived from
// ctx that is cancelled (with cause errUploadStalled) when the transport
// takes no bytes of the body for idle: a connection whose peer stopped
// reading blocks the write of a request forever, and net/http has no
// write time-out (ResponseHeaderTimeout starts only once the body is
// sent). Once the body is sent, the watch ends. stop releases the timer.
func watchUpload(ctx context.Context, data []byte, idle time.Duration) (body func() io.ReadCloser, wctx context.Context, stop func()) {
	wctx, cancel := context.WithCancelCause(ctx)
	t := time.AfterFunc(idle, func() { cancel(errUploadStalled) })
	body = func() io.ReadCloser {
		return &watchedBody{r: bytes.NewReader(data), t: t, idle: idle}
	}
	return body, wctx, func() { t.Stop(); cancel(nil) }
}

// watchedBody restarts the watch's timer on every Read and stops it at
// the end of the body.
type watchedBody struct {
	mu   sync.Mutex
	r    *bytes.Reader
	t    *time.Timer
	idle time.Duration
}

func (w *watchedBody) Read(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.r.Read(p)
	if err == io.EOF {
		w.t.Stop()
	} else {
		w.t.Reset(w.idle)
	}
	return n, err
}

func (w *watchedBody) Close() error { return nil }

// uploadStalledError turns the error of a request whose watch fired into
// one the retry layer retries (class backend.ErrUnreachable); other
// errors pass unchanged.
func uploadStalledError(wctx context.Context, idle time.Duration, err error) error {
	if errors.Is(context.Cause(wctx), errUploadStalled) {
		return backend.NewClassError(fmt.Sprintf("the connection took no bytes of the upload for %v: it stalled", idle), backend.ErrUnreachable)
	}
	return err
}

// watchBody returns body with a read deadline of idle from every Read on,
// so that an upload whose client went silent fails and frees its slot
// instead of holding it for as long as the connection stays open.
func watchBody(w http.ResponseWriter, body io.ReadCloser, idle time.Duration) io.ReadCloser {
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
