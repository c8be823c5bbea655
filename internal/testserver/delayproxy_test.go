package testserver

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every connection with what it reads, until the client
// half-closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestDelayProxy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{
		{"no delay", 0},
		{"10ms", 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := StartDelayProxy(t, echoServer(t), tc.delay)
			c, err := net.Dial("tcp", p.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			// Round trips take twice the delay, and not much more.
			buf := make([]byte, 1)
			const trips = 10
			start := time.Now()
			for i := 0; i < trips; i++ {
				if _, err := c.Write([]byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil || buf[0] != byte(i) {
					t.Fatalf("round trip %d: %v, got %d", i, err, buf[0])
				}
			}
			rtt := time.Since(start) / trips
			if rtt < 2*tc.delay || rtt > 2*tc.delay+15*time.Millisecond {
				t.Errorf("round trip %v, want about %v", rtt, 2*tc.delay)
			}

			// Bulk data arrives whole and in order, and its speed is not
			// bound by the delay: 8 MiB in 512 writes of 16 KiB would take
			// 10 s at 10 ms if each write waited for a round trip; it
			// must take less than half that (about 1 s here, more under
			// the race detector on a loaded machine).
			const write = 16 << 10
			data := make([]byte, 8<<20)
			rand.Read(data)
			bound := max(5*time.Second, time.Duration(len(data)/write)*tc.delay)
			start = time.Now()
			errc := make(chan error, 1)
			go func() {
				for off := 0; off < len(data); off += write {
					if _, err := c.Write(data[off : off+write]); err != nil {
						errc <- err
						return
					}
				}
				errc <- c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(data))
			}
			if el := time.Since(start); el > bound {
				t.Errorf("8 MiB took %v through the proxy, more than %v", el, bound)
			}

			st := p.Stats()
			if st.Conns != 1 || st.BytesUp != trips+int64(len(data)) || st.BytesDown != st.BytesUp || st.ChunksUp < trips {
				t.Errorf("stats %+v", st)
			}
			if d := p.Stats().Sub(st); d != (ProxyStats{}) {
				t.Errorf("Sub of equal stats: %+v", d)
			}
		})
	}
}

// TestDelayProxyServerGone: a client of a proxy whose server is down sees
// its connection closed, and Close ends open connections.
func TestDelayProxyServerGone(t *testing.T) {
	p, err := NewDelayProxy(FreeAddr(t), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a proxy without a server succeeded")
	}
	c.Close()

	p2 := StartDelayProxy(t, echoServer(t), 10*time.Millisecond)
	c2, err := net.Dial("tcp", p2.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("x"))
	io.ReadFull(c2, make([]byte, 1))
	done := make(chan struct{})
	go func() { p2.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end an open connection")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
