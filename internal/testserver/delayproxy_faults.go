package testserver

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
)

// NetFaults are the network failures a DelayProxy injects into the
// connections it accepts from the moment they are set (SetFaults): each
// new connection is, with probability DropRate, reset (RST, as a
// connection killed by a middlebox) after a number of bytes drawn
// uniformly from [0, MaxBytes), counted over both directions; or, with
// probability StallRate, stalled after such a number of bytes: from then
// on no byte moves either way, for as long as the client keeps it open
// (as a connection a NAT forgot). Seed makes the draws reproducible for
// the same order of connections.
type NetFaults struct {
	DropRate, StallRate float64
	MaxBytes            int64
	Seed                uint64
}

// NetFaultStats counts what a DelayProxy injected.
type NetFaultStats struct {
	Drops, Stalls int64
}

// faultState is the proxy's part for NetFaults.
type faultState struct {
	mu     sync.Mutex
	f      NetFaults
	rng    *rand.Rand
	drops  atomic.Int64
	stalls atomic.Int64
}

// SetFaults arms f for the connections accepted from now on; the zero
// NetFaults disarms them (connections already failing stay so).
func (p *DelayProxy) SetFaults(f NetFaults) {
	p.faults.mu.Lock()
	p.faults.f = f
	p.faults.rng = rand.New(rand.NewPCG(f.Seed, f.Seed^0x5bd1e995))
	p.faults.mu.Unlock()
}

// FaultStats returns the drops and stalls injected so far.
func (p *DelayProxy) FaultStats() NetFaultStats {
	return NetFaultStats{Drops: p.faults.drops.Load(), Stalls: p.faults.stalls.Load()}
}

// DropAll resets every open connection now.
func (p *DelayProxy) DropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		reset(c)
	}
}

// reset closes c with an RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// connFault is the fate drawn for one connection.
type connFault struct {
	kind  int // faultNone, faultDrop or faultStall
	after int64
	moved atomic.Int64
	once  sync.Once
}

const (
	faultNone = iota
	faultDrop
	faultStall
)

// draw picks the fate of a new connection.
func (p *DelayProxy) draw() *connFault {
	cf := &connFault{}
	p.faults.mu.Lock()
	defer p.faults.mu.Unlock()
	f := p.faults.f
	if p.faults.rng == nil || f.MaxBytes <= 0 {
		return cf
	}
	x := p.faults.rng.Float64()
	switch {
	case x < f.DropRate:
		cf.kind = faultDrop
	case x < f.DropRate+f.StallRate:
		cf.kind = faultStall
	default:
		return cf
	}
	cf.after = p.faults.rng.Int64N(f.MaxBytes)
	return cf
}

// pass is called before n bytes are forwarded on a connection whose ends
// are a and b; it reports whether they may go. A drop resets both ends;
// a stalled connection swallows what it reads from then on, so that
// neither end hears from the other again.
func (p *DelayProxy) pass(cf *connFault, n int, a, b net.Conn) bool {
	if cf.kind == faultNone {
		return true
	}
	if cf.moved.Add(int64(n)) <= cf.after {
		return true
	}
	switch cf.kind {
	case faultDrop:
		cf.once.Do(func() { p.faults.drops.Add(1) })
		reset(a)
		reset(b)
		return false
	default:
		cf.once.Do(func() { p.faults.stalls.Add(1) })
		return false
	}
}

// isStalled reports whether the connection has stalled.
func (cf *connFault) isStalled() bool {
	return cf.kind == faultStall && cf.moved.Load() > cf.after
}
