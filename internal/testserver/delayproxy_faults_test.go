package testserver

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestDelayProxyFaults: a dropped connection ends in an error mid-way, a
// stalled one goes silent, and without faults the bytes come back whole.
func TestDelayProxyFaults(t *testing.T) {
	target := echoServer(t)
	p := StartDelayProxy(t, target, 0)
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	echo := func() ([]byte, error) {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		go func() { c.Write(data); c.(*net.TCPConn).CloseWrite() }()
		return io.ReadAll(c)
	}
	if got, err := echo(); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("without faults: %d bytes, %v", len(got), err)
	}
	p.SetFaults(NetFaults{DropRate: 1, MaxBytes: 16 << 10, Seed: 1})
	if got, err := echo(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) || len(got) >= len(data) {
		t.Errorf("dropped: %d bytes, %v; want a reset before the end", len(got), err)
	}
	p.SetFaults(NetFaults{StallRate: 1, MaxBytes: 16 << 10, Seed: 1})
	if got, err := echo(); !errors.Is(err, os.ErrDeadlineExceeded) || len(got) >= len(data) {
		t.Errorf("stalled: %d bytes, %v; want silence until the deadline", len(got), err)
	}
	if s := p.FaultStats(); s.Drops != 1 || s.Stalls != 1 {
		t.Errorf("stats %+v, want one drop and one stall", s)
	}
	p.SetFaults(NetFaults{})
	if got, err := echo(); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("disarmed: %d bytes, %v", len(got), err)
	}
}
