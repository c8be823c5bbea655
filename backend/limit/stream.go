package limit

import (
	"context"
	"io"
)

// Pacer paces byte streams that carry a backend's traffic (the pipes to
// an ssh process, say) to its rates, summed over every stream it paced:
// the third form beside Backend and Transport, for backends whose calls
// share one connection and so cannot be paced call by call.
type Pacer struct {
	up, down *bucket
}

// NewPacer returns a Pacer for r, or nil when both rates are unlimited; a
// nil Pacer returns the streams it is given unchanged.
func NewPacer(r Rates) *Pacer {
	if r.Upload <= 0 && r.Download <= 0 {
		return nil
	}
	return &Pacer{up: newBucket(r.Upload), down: newBucket(r.Download)}
}

// Download returns r with its reads paced to the download rate.
func (p *Pacer) Download(r io.Reader) io.Reader {
	if p == nil || p.down == nil {
		return r
	}
	return &pacedReader{ctx: context.Background(), rc: io.NopCloser(r), b: p.down}
}

// Upload returns w with its writes paced to the upload rate.
func (p *Pacer) Upload(w io.WriteCloser) io.WriteCloser {
	if p == nil || p.up == nil {
		return w
	}
	return &pacedWriter{w: w, b: p.up}
}

// pacedWriter writes to w no faster than its bucket allows, in pieces so
// that a large write is spread out instead of sent in one burst.
type pacedWriter struct {
	w io.WriteCloser
	b *bucket
}

func (p *pacedWriter) Write(buf []byte) (int, error) {
	n := 0
	for len(buf) > 0 {
		c := min(len(buf), p.b.chunk())
		if err := p.b.wait(context.Background(), c); err != nil {
			return n, err
		}
		m, err := p.w.Write(buf[:c])
		n += m
		if err != nil {
			return n, err
		}
		buf = buf[c:]
	}
	return n, nil
}

func (p *pacedWriter) Close() error { return p.w.Close() }
