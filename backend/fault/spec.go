package fault

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"dj/backend"
)

// EnvVar names the environment variable with which the end-to-end tests
// arm faults in the built binary (see ParseSpec). The CLI reads it only in
// its insecure test mode (DJ_INSECURE_TEST_KDF=1), so users never meet it.
const EnvVar = "DJ_TEST_FAULTS"

// Spec is a set of random transient faults for a whole run.
type Spec struct {
	// Rate is the probability of a failure of each call of Ops.
	Rate float64
	// Seed makes the faults reproducible for the same sequence of calls.
	Seed uint64
	// Ops are the operations that fail; all of them when empty.
	Ops []Op
	// Delay, if not zero, is the first wait of the retry layer that is
	// to heal the faults (shorter than the default keeps tests fast).
	Delay time.Duration
}

// ParseSpec reads a spec of comma-separated KEY=VALUE pairs:
// "rate=0.1,seed=7,ops=save+load,delay=20ms". rate is required.
func ParseSpec(s string) (Spec, error) {
	var sp Spec
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return Spec{}, fmt.Errorf("fault spec %q: %q is not KEY=VALUE", s, kv)
		}
		var err error
		switch k {
		case "rate":
			sp.Rate, err = strconv.ParseFloat(v, 64)
			if err == nil && (sp.Rate <= 0 || sp.Rate >= 1) {
				err = fmt.Errorf("want a number between 0 and 1")
			}
		case "seed":
			sp.Seed, err = strconv.ParseUint(v, 10, 64)
		case "delay":
			sp.Delay, err = time.ParseDuration(v)
		case "ops":
			for _, o := range strings.Split(v, "+") {
				switch op := Op(o); op {
				case Save, Load, Stat, List, Remove:
					sp.Ops = append(sp.Ops, op)
				default:
					err = fmt.Errorf("unknown operation %q", o)
				}
			}
		default:
			err = fmt.Errorf("unknown key")
		}
		if err != nil {
			return Spec{}, fmt.Errorf("fault spec %q: %s: %w", s, k, err)
		}
	}
	if sp.Rate == 0 {
		return Spec{}, fmt.Errorf("fault spec %q: rate is missing", s)
	}
	return sp, nil
}

// Arm seeds b and adds a rule with the spec's rate, without end, for each
// of its operations.
func (sp Spec) Arm(b *Backend) {
	b.Seed(sp.Seed)
	ops := sp.Ops
	if len(ops) == 0 {
		ops = []Op{Save, Load, Stat, List, Remove}
	}
	for _, op := range ops {
		b.Add(Rule{Op: op, Rate: sp.Rate, Times: -1})
	}
}

// Opaque returns b as a plain backend.Backend that hides the capabilities
// of the backends below it (backend.As stops at it), so that every save
// and load goes through b's methods and meets its faults.
func Opaque(b *Backend) backend.Backend { return opaque{b} }

type opaque struct{ b *Backend }

func (o opaque) Location() string { return o.b.Location() }
func (o opaque) Close() error     { return o.b.Close() }
func (o opaque) Save(ctx context.Context, h backend.Handle, data []byte) error {
	return o.b.Save(ctx, h, data)
}
func (o opaque) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	return o.b.Load(ctx, h, offset, length)
}
func (o opaque) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	return o.b.Stat(ctx, h)
}
func (o opaque) Remove(ctx context.Context, h backend.Handle) error { return o.b.Remove(ctx, h) }
func (o opaque) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	return o.b.List(ctx, t, fn)
}
