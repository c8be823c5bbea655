package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"dj/backend/limit"
)

// The bounds of --pack-size, as restic's.
const (
	minPackSizeMiB = 4
	maxPackSizeMiB = 128
)

// extendedOption is one KEY=VALUE option that -o/--option accepts
// (restic's extended options). Options for a kind of repository other than
// the one opened are accepted and ignored, as restic does.
type extendedOption struct {
	key   string
	help  string
	check func(value string) error
}

// extendedOptions lists the options dj knows: those of the location
// registry's schemes. Keep it to tunables that exist: each must change
// what the backend does.
func extendedOptions() []extendedOption {
	var opts []extendedOption
	for _, o := range locations.Options() {
		check := o.Check
		if check == nil {
			check = func(string) error { return nil }
		}
		opts = append(opts, extendedOption{key: o.Key, help: o.Help, check: check})
	}
	return opts
}

// extendedOptionKeys returns the known option keys, for messages.
func extendedOptionKeys() []string {
	var keys []string
	for _, o := range extendedOptions() {
		keys = append(keys, o.key)
	}
	return keys
}

func checkPositiveInt(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a positive whole number, got %q", v)
	}
	return nil
}

// parseExtendedOptions parses -o values into a map. An item without "=",
// an unknown key or a bad value is a usage error that names it; a key
// given twice keeps its last value.
func parseExtendedOptions(items []string) (map[string]string, error) {
	known := map[string]extendedOption{}
	for _, o := range extendedOptions() {
		known[o.key] = o
	}
	m := map[string]string{}
	for _, item := range items {
		k, v, ok := strings.Cut(item, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, usageError("option %q: want KEY=VALUE", item)
		}
		o, ok := known[k]
		if !ok {
			return nil, usageError("unknown option %q (known options: %s)", k, strings.Join(extendedOptionKeys(), ", "))
		}
		if err := o.check(v); err != nil {
			return nil, usageError("option %s: %v", k, err)
		}
		m[k] = v
	}
	return m, nil
}

// checkExtendedOptions is the action of -o: bad options fail every
// command, not only those that open a repository.
func checkExtendedOptions(_ *cli.Context, items []string) error {
	_, err := parseExtendedOptions(items)
	return err
}

// checkPackSize is the action of --pack-size; 0 means the repository's.
func checkPackSize(_ *cli.Context, mib uint) error {
	if mib != 0 && (mib < minPackSizeMiB || mib > maxPackSizeMiB) {
		return usageError("--pack-size %d MiB is out of range: want %d to %d MiB", mib, minPackSizeMiB, maxPackSizeMiB)
	}
	return nil
}

// checkRate returns the action of a rate limit flag: 0 means unlimited,
// less is a mistake.
func checkRate(flag string) func(*cli.Context, int) error {
	return func(_ *cli.Context, kib int) error {
		if kib < 0 {
			return usageError("--%s %d: a rate cannot be negative (0 means unlimited)", flag, kib)
		}
		return nil
	}
}

// globals returns the context that holds the global flags, so that a
// command's own flag of the same name (repack --pack-size SIZE) does not
// hide the global one.
func globals(c *cli.Context) *cli.Context {
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil && ctx.App != nil && ctx.Command.Name == ctx.App.Name {
			return ctx
		}
	}
	return c
}

// extendedOptions returns the -o options as a map.
func (e *env) extendedOptions() (map[string]string, error) {
	return parseExtendedOptions(globals(e.c).StringSlice("option"))
}

// rates returns --limit-upload and --limit-download in bytes per second.
func (e *env) rates() limit.Rates {
	g := globals(e.c)
	return limit.Rates{Upload: int64(max(g.Int("limit-upload"), 0)) << 10, Download: int64(max(g.Int("limit-download"), 0)) << 10}
}

// packSize returns --pack-size in bytes; 0 means the repository's.
func (e *env) packSize() int {
	return int(globals(e.c).Uint("pack-size")) << 20
}
