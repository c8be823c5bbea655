package testserver

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DelayProxy is a TCP proxy on 127.0.0.1 that forwards every connection to
// a server and delivers each chunk it reads Delay after the chunk arrived,
// in both directions: a request and its answer take 2×Delay more than
// without it, as across a network with that round trip. Bandwidth is not
// limited and the order of the bytes is kept. It stands in for netem,
// which the test kernels do not have.
type DelayProxy struct {
	// Addr is the proxy's address, 127.0.0.1:PORT.
	Addr string
	// Delay is how long each chunk is held, per direction.
	Delay time.Duration

	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	faults faultState

	nConns    atomic.Int64
	chunksUp  atomic.Int64
	bytesUp   atomic.Int64
	chunksDn  atomic.Int64
	bytesDown atomic.Int64
}

// ProxyStats counts what went through a DelayProxy.
type ProxyStats struct {
	// Conns is the number of connections accepted.
	Conns int64
	// ChunksUp and BytesUp count the reads from clients forwarded to the
	// server; a client's request that arrives in one piece is one chunk.
	ChunksUp, BytesUp int64
	// ChunksDown and BytesDown count what went back to the clients.
	ChunksDown, BytesDown int64
}

// Sub returns the counts since an earlier snapshot o.
func (s ProxyStats) Sub(o ProxyStats) ProxyStats {
	return ProxyStats{Conns: s.Conns - o.Conns, ChunksUp: s.ChunksUp - o.ChunksUp, BytesUp: s.BytesUp - o.BytesUp,
		ChunksDown: s.ChunksDown - o.ChunksDown, BytesDown: s.BytesDown - o.BytesDown}
}

// NewDelayProxy listens on a free port of 127.0.0.1 and forwards to
// target (host:port) with the given one-way delay; 0 forwards at once.
// Close stops it.
func NewDelayProxy(target string, delay time.Duration) (*DelayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &DelayProxy{Addr: ln.Addr().String(), Delay: delay, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// StartDelayProxy is NewDelayProxy for a test: it fails the test when the
// proxy cannot listen and closes the proxy when the test ends.
func StartDelayProxy(t TB, target string, delay time.Duration) *DelayProxy {
	t.Helper()
	p, err := NewDelayProxy(target, delay)
	if err != nil {
		t.Fatalf("delay proxy: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Stats returns the counts so far.
func (p *DelayProxy) Stats() ProxyStats {
	return ProxyStats{Conns: p.nConns.Load(), ChunksUp: p.chunksUp.Load(), BytesUp: p.bytesUp.Load(),
		ChunksDown: p.chunksDn.Load(), BytesDown: p.bytesDown.Load()}
}

// Close stops accepting, ends every open connection and waits for the
// proxy's goroutines.
func (p *DelayProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// track registers an open connection; it returns false once the proxy is
// closed.
func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.nConns.Add(1)
		p.wg.Add(1)
		go p.serve(client)
	}
}

// serve forwards one connection in both directions until both are done.
func (p *DelayProxy) serve(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client) || !p.track(server) {
		client.Close()
		server.Close()
		return
	}
	defer func() {
		client.Close()
		server.Close()
		p.untrack(client)
		p.untrack(server)
	}()
	cf := p.draw()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(server, client, cf, &p.chunksUp, &p.bytesUp) }()
	go func() { defer wg.Done(); p.pipe(client, server, cf, &p.chunksDn, &p.bytesDown) }()
	wg.Wait()
}

// readSize is the proxy's read size; a chunk of less than smallChunk is
// copied out of the read buffer rather than taking it.
const (
	readSize   = 256 << 10
	smallChunk = 64 << 10
)

// chunk is data read from one side, due for the other side at due.
type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst, holding each chunk until Delay after it was
// read. At src's end it half-closes dst; on a write error it closes src.
//
// A stalled connection (NetFaults) tells neither end anything more, not
// even that the other closed; it ends when the proxy closes.
func (p *DelayProxy) pipe(dst, src net.Conn, cf *connFault, chunks, bytes *atomic.Int64) {
	queue := make(chan chunk, 4096)
	// free holds the buffers of written chunks for the next reads: a copy
	// into fresh memory per chunk made the proxy, not the network it
	// stands for, the limit of a fast client (the harness's own page
	// faults).
	free := make(chan []byte, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		failed := false
		for c := range queue {
			if failed {
				continue
			}
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.data); err != nil {
				failed = true
				src.Close() // the reader stops; the queue drains
			}
			if cap(c.data) == readSize {
				select {
				case free <- c.data[:cap(c.data)]:
				default:
				}
			}
		}
		switch {
		case cf.isStalled():
		case !failed:
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}
	}()
	var buf []byte
	for {
		if buf == nil {
			select {
			case buf = <-free:
			default:
				buf = make([]byte, readSize)
			}
		}
		n, err := src.Read(buf)
		if n > 0 && !p.pass(cf, n, src, dst) {
			n = 0 // dropped (src is closed now) or stalled
		}
		if n > 0 {
			chunks.Add(1)
			bytes.Add(int64(n))
			data := buf[:n]
			if n < smallChunk {
				// A small chunk gets its own copy, so that a stream of
				// them does not hold a large buffer each.
				data = append([]byte(nil), data...)
			} else {
				buf = nil
			}
			queue <- chunk{data: data, due: time.Now().Add(p.Delay)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !cf.isStalled() {
				// A reset or a close: end the other direction too.
				dst.Close()
			}
			break
		}
	}
	close(queue)
	<-done
}
