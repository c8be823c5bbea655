package fault

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"dj/backend"
)

// EnvVar names the environment variable with which the end-to-end tests
// arm faults in the built binary (see ParseSpec). The CLI reads it only in
// its insecure test mode (DJ_INSECURE_TEST_KDF=1), so users never meet it.
const EnvVar = "DJ_TEST_FAULTS"

// Spec is a script of faults for a whole run: one or more rules, each
// aimed at operations and file types, firing by count or at a rate,
// reproducible by seed.
type Spec struct {
	// Seed makes the faults reproducible for the same sequence of calls.
	Seed uint64
	// Delay, if not zero, is the first wait of the retry layer that is
	// to heal the faults (shorter than the default keeps tests fast).
	Delay time.Duration
	// Rules are the faults, one per operation and file type named.
	Rules []Rule
}

// Modes by name, as the spec writes them, with the operations each
// applies to (the first ones are its default).
var specModes = map[string]struct {
	ops  []Op
	rule Rule
}{
	"error":     {[]Op{Save, Load, Stat, List, Remove}, Rule{}},
	"timeout":   {[]Op{Save, Load, Stat, List, Remove}, Rule{Mode: ModeTimeout}},
	"shortread": {[]Op{Load}, Rule{Mode: ModeShortRead}},
	"flip":      {[]Op{Load}, Rule{Corrupt: true, Offset: Middle}},
	"lostreply": {[]Op{Save, Remove}, Rule{After: true}},
	"halfsave":  {[]Op{Save}, Rule{Mode: ModeHalfSave}},
	"emptylist": {[]Op{List}, Rule{Mode: ModeShortList}},
	"shortlist": {[]Op{List}, Rule{Mode: ModeShortList, AfterItems: 1}},
	"listfail":  {[]Op{List}, Rule{AfterItems: 1}},
}

// ParseSpec reads a script of faults: rules separated by ";", each a list
// of comma-separated KEY=VALUE pairs.
//
//	seed=N        the random seed (any rule may carry it; one for all)
//	delay=D       the first wait of the retry layer (likewise)
//	mode=M        error (the default), timeout, shortread, flip (a flipped
//	              byte in what a load returns), lostreply (a save or
//	              remove that was done but reports failure), halfsave (a
//	              save that stores half the bytes and fails), emptylist (a
//	              listing that returns nothing, without an error),
//	              shortlist (one entry, then nothing), listfail (one
//	              entry, then an error)
//	ops=A+B       the operations: save, load, stat, list, remove (default:
//	              all the mode applies to)
//	types=A+B     the file types: config, keys, data, index, snapshots,
//	              locks (default: all)
//	rate=P        fire on each matching call with probability P, or
//	nth=N         fire on the Nth matching call (counting from 1),
//	every=K       and then on every Kth after it,
//	times=T       T times in all (-1: without end; default 1 for nth
//	              without every, without end otherwise)
//	after=N       shortlist, listfail: the entries delivered first
//	wait=D        timeout: how long the call hangs (default 50ms)
//
// Each operation and type of a rule counts its calls separately. Example:
// "seed=7,delay=5ms;mode=emptylist,types=index;mode=flip,types=data,rate=0.05".
// The old form "rate=0.1,seed=7,ops=save+load" is one error rule.
func ParseSpec(s string) (Spec, error) {
	var sp Spec
	bad := func(format string, a ...any) (Spec, error) {
		return Spec{}, fmt.Errorf("fault spec %q: %s", s, fmt.Sprintf(format, a...))
	}
	for _, part := range strings.Split(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		mode, ops, types := "error", []Op(nil), []backend.FileType(nil)
		var rate float64
		var nth, every, times, after int
		var wait time.Duration
		isRule, timesSet, afterSet := false, false, false
		for _, kv := range strings.Split(part, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok {
				return bad("%q is not KEY=VALUE", kv)
			}
			var err error
			switch k {
			case "seed":
				sp.Seed, err = strconv.ParseUint(v, 10, 64)
			case "delay":
				sp.Delay, err = time.ParseDuration(v)
			case "mode":
				if _, ok := specModes[v]; !ok {
					err = fmt.Errorf("unknown mode")
				}
				mode = v
			case "ops", "op":
				for _, o := range strings.Split(v, "+") {
					switch op := Op(o); op {
					case Save, Load, Stat, List, Remove:
						ops = append(ops, op)
					default:
						err = fmt.Errorf("unknown operation %q", o)
					}
				}
			case "types", "type":
				for _, t := range strings.Split(v, "+") {
					ft := backend.FileType(t)
					if !validType(ft) {
						err = fmt.Errorf("unknown file type %q", t)
					}
					types = append(types, ft)
				}
			case "rate":
				rate, err = strconv.ParseFloat(v, 64)
				if err == nil && (rate <= 0 || rate > 1) {
					err = fmt.Errorf("want a number above 0 and at most 1")
				}
				isRule = true
			case "nth", "every", "times", "after":
				var n int
				n, err = strconv.Atoi(v)
				if err == nil && (n < 0 && k != "times" || n == 0 && k != "after") {
					err = fmt.Errorf("out of range")
				}
				switch k {
				case "nth":
					nth, isRule = n, true
				case "every":
					every = n
				case "times":
					times, timesSet = n, true
				case "after":
					after, afterSet = n, true
				}
			case "wait":
				wait, err = time.ParseDuration(v)
			default:
				err = fmt.Errorf("unknown key")
			}
			if err != nil {
				return bad("%s: %v", k, err)
			}
		}
		if !isRule {
			if mode != "error" || ops != nil || types != nil || every != 0 || timesSet || afterSet || wait != 0 {
				return bad("a rule needs rate or nth")
			}
			continue
		}
		if rate > 0 && nth > 0 {
			return bad("a rule has rate or nth, not both")
		}
		m := specModes[mode]
		if ops == nil {
			ops = m.ops
		}
		for _, op := range ops {
			if !slices.Contains(m.ops, op) {
				return bad("mode %s does not apply to %s", mode, op)
			}
		}
		if !timesSet {
			times = 1
			if rate > 0 || every > 0 {
				times = -1
			}
		}
		if types == nil {
			types = []backend.FileType{""}
		}
		for _, op := range ops {
			for _, t := range types {
				r := m.rule
				r.Op, r.Type, r.Rate, r.Nth, r.Every, r.Times, r.Wait = op, t, rate, nth, every, times, wait
				if afterSet {
					r.AfterItems = after
				}
				sp.Rules = append(sp.Rules, r)
			}
		}
	}
	if len(sp.Rules) == 0 {
		return bad("no rule (a rule needs rate or nth)")
	}
	return sp, nil
}

func validType(t backend.FileType) bool {
	return slices.Contains(backend.AllFileTypes, t)
}

// Arm seeds b and adds the spec's rules.
func (sp Spec) Arm(b *Backend) {
	b.Seed(sp.Seed)
	for _, r := range sp.Rules {
		b.Add(r)
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
