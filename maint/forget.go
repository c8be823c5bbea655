package maint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"dj/repo/snapshot"
)

// Unlimited as a keep count means "keep every snapshot this rule selects"
// (restic's "unlimited").
const Unlimited = -1

// ParseKeepCount parses the value of a --keep-{last,hourly,...} option: a
// non-negative integer or "unlimited" (which yields [Unlimited]).
func ParseKeepCount(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "unlimited" {
		return Unlimited, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("invalid keep count %q: want a number or \"unlimited\"", s)
	}
	if n < Unlimited {
		return 0, fmt.Errorf("invalid keep count %q: negative values other than -1 are not allowed", s)
	}
	return n, nil
}

// TagList is one --keep-tag value: tags that must all be present on a
// snapshot; a list holding the empty tag matches snapshots without any tag.
// It is the tag list of snapshot filters, so --keep-tag and --tag agree.
type TagList = snapshot.TagList

// ParseTagList splits a comma-separated list of tags ("a,b"), trimming
// white space around each tag, as restic does.
func ParseTagList(s string) TagList { return snapshot.ParseTagList(s) }

// maxDurationValue bounds each number of a Duration, so that hours converted
// to a time.Duration cannot overflow.
const maxDurationValue = 1_000_000

// Duration is a calendar duration in years, months, days and hours, written
// like "1y2m3d4h" (restic's --keep-within syntax). Years, months and days
// are calendar steps in the time zone of the time they are subtracted from.
type Duration struct {
	Years, Months, Days, Hours int
}

// ErrInvalidDuration is returned by ParseDuration for malformed input.
var ErrInvalidDuration = errors.New("invalid duration")

// ParseDuration parses a duration such as "2y5m7d3h". Each part is a number
// followed by one of the units y, m, d or h; parts may come in any order and
// may be left out; a unit given twice keeps its last value. The empty string
// is the zero duration. Negative numbers are refused.
func ParseDuration(s string) (Duration, error) {
	var d Duration
	rest := strings.TrimSpace(s)
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			return Duration{}, fmt.Errorf("%w %q: expected a number at %q", ErrInvalidDuration, s, rest)
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n > maxDurationValue {
			return Duration{}, fmt.Errorf("%w %q: number %s is too large", ErrInvalidDuration, s, rest[:i])
		}
		if i == len(rest) {
			return Duration{}, fmt.Errorf("%w %q: no unit after number %d", ErrInvalidDuration, s, n)
		}
		switch rest[i] {
		case 'y':
			d.Years = n
		case 'm':
			d.Months = n
		case 'd':
			d.Days = n
		case 'h':
			d.Hours = n
		default:
			return Duration{}, fmt.Errorf("%w %q: unknown unit %q after number %d (want y, m, d or h)",
				ErrInvalidDuration, s, rest[i], n)
		}
		rest = rest[i+1:]
	}
	return d, nil
}

// String formats the duration in the syntax ParseDuration reads, leaving out
// zero parts ("1y3d"). The zero duration is the empty string.
func (d Duration) String() string {
	var b strings.Builder
	for _, p := range []struct {
		n    int
		unit string
	}{{d.Years, "y"}, {d.Months, "m"}, {d.Days, "d"}, {d.Hours, "h"}} {
		if p.n != 0 {
			b.WriteString(strconv.Itoa(p.n))
			b.WriteString(p.unit)
		}
	}
	return b.String()
}

// Zero reports whether all parts of the duration are zero.
func (d Duration) Zero() bool { return d == Duration{} }

// before returns t moved back by d: first years, months and days in t's
// time zone, then hours.
func (d Duration) before(t time.Time) time.Time {
	return t.AddDate(-d.Years, -d.Months, -d.Days).Add(-time.Duration(d.Hours) * time.Hour)
}

func (d Duration) validate() error {
	for _, n := range []int{d.Years, d.Months, d.Days, d.Hours} {
		if n < 0 {
			return fmt.Errorf("%w %q: negative values are not allowed", ErrInvalidDuration, d)
		}
		if n > maxDurationValue {
			return fmt.Errorf("%w %q: value %d is too large", ErrInvalidDuration, d, n)
		}
	}
	return nil
}

// ExpirePolicy says which snapshots of a group to keep; every other snapshot
// is removed. A snapshot is kept when any rule selects it.
//
// The counted rules keep the newest snapshot of each of the n newest
// periods (hours, days, ISO weeks, months, years) that hold a snapshot, in
// the snapshot's own time zone; Last keeps the n newest snapshots. A count of
// [Unlimited] keeps one snapshot of every period. When a counted rule has
// count left after the oldest snapshot's period was already used, it keeps
// the oldest snapshot too ("oldest daily snapshot").
//
// The Within rules count back from the newest snapshot that is not in the
// future: Within keeps every snapshot made strictly after that point, the
// WithinHourly..WithinYearly rules keep the newest snapshot of each period
// after it. Tags keeps every snapshot matching at least one tag list.
type ExpirePolicy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int

	Within, WithinHourly, WithinDaily, WithinWeekly, WithinMonthly, WithinYearly Duration

	Tags []TagList
}

// Empty reports whether the policy has no rule at all. Applying an empty
// policy removes every snapshot, so callers should refuse it unless told
// otherwise.
func (p ExpirePolicy) Empty() bool {
	return len(p.Tags) == 0 &&
		p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 &&
		p.Within.Zero() && p.WithinHourly.Zero() && p.WithinDaily.Zero() &&
		p.WithinWeekly.Zero() && p.WithinMonthly.Zero() && p.WithinYearly.Zero()
}

// Validate checks that counts are non-negative or [Unlimited] and durations
// are non-negative.
func (p ExpirePolicy) Validate() error {
	for _, c := range []struct {
		name string
		n    int
	}{{"last", p.Last}, {"hourly", p.Hourly}, {"daily", p.Daily}, {"weekly", p.Weekly},
		{"monthly", p.Monthly}, {"yearly", p.Yearly}} {
		if c.n < Unlimited {
			return fmt.Errorf("keep-%s %d: negative values other than -1 (unlimited) are not allowed", c.name, c.n)
		}
	}
	for _, d := range []Duration{p.Within, p.WithinHourly, p.WithinDaily, p.WithinWeekly,
		p.WithinMonthly, p.WithinYearly} {
		if err := d.validate(); err != nil {
			return err
		}
	}
	return nil
}

// String describes the policy in restic's words, e.g. "keep 7 daily, 4
// weekly snapshots" or "remove" for an empty policy.
func (p ExpirePolicy) String() string {
	var keeps, withins []string
	for _, c := range []struct {
		n    int
		name string
	}{{p.Last, "latest"}, {p.Hourly, "hourly"}, {p.Daily, "daily"}, {p.Weekly, "weekly"},
		{p.Monthly, "monthly"}, {p.Yearly, "yearly"}} {
		switch {
		case c.n > 0:
			keeps = append(keeps, fmt.Sprintf("%d %s", c.n, c.name))
		case c.n == Unlimited:
			keeps = append(keeps, "all "+c.name)
		}
	}
	for _, w := range []struct {
		d    Duration
		name string
	}{{p.WithinHourly, "hourly"}, {p.WithinDaily, "daily"}, {p.WithinWeekly, "weekly"},
		{p.WithinMonthly, "monthly"}, {p.WithinYearly, "yearly"}} {
		if !w.d.Zero() {
			withins = append(withins, fmt.Sprintf("%s snapshots within %s", w.name, w.d))
		}
	}
	var s string
	if len(keeps) > 0 {
		s = strings.Join(keeps, ", ") + " snapshots"
	}
	if len(withins) > 0 {
		if s != "" {
			s += ", "
		}
		s += strings.Join(withins, ", ")
	}
	if len(p.Tags) > 0 {
		if s != "" {
			s += " and "
		}
		s += fmt.Sprintf("all snapshots with tags %v", p.Tags)
	}
	if !p.Within.Zero() {
		if s != "" {
			s += " and "
		}
		s += fmt.Sprintf("all snapshots within %s of the newest", p.Within)
	}
	if s == "" {
		return "remove"
	}
	return "keep " + s
}

// KeepReason says why ApplyPolicy kept a snapshot.
type KeepReason struct {
	Snapshot *snapshot.Snapshot `json:"snapshot"`
	// Matches names the rules that selected the snapshot, in restic's words:
	// "has tags [a, b]", "within 1y2m", "last snapshot", "hourly snapshot",
	// "daily snapshot", ..., "oldest daily snapshot", "daily within 7d",
	// "oldest monthly within 1y".
	Matches []string `json:"matches"`
	// Counters holds the count left in each counted rule after this
	// snapshot ("last", "hourly", "daily", "weekly", "monthly", "yearly");
	// rules at zero are left out, unlimited ones show -1. Never nil.
	Counters map[string]int `json:"counters"`
}

// bucketKey maps a snapshot time (and its position in the newest-first list)
// to the period it belongs to.
type bucketKey func(t time.Time, nr int) int

func byPosition(_ time.Time, nr int) int { return nr }
func byHour(t time.Time, _ int) int {
	return t.Year()*1_000_000 + int(t.Month())*10_000 + t.Day()*100 + t.Hour()
}
func byDay(t time.Time, _ int) int { return t.Year()*10_000 + int(t.Month())*100 + t.Day() }
func byWeek(t time.Time, _ int) int {
	y, w := t.ISOWeek()
	return y*100 + w
}
func byMonth(t time.Time, _ int) int { return t.Year()*100 + int(t.Month()) }
func byYear(t time.Time, _ int) int  { return t.Year() }

// ApplyPolicy splits list (in any order; it is not modified) into the
// snapshots p keeps and those it removes, both newest first. reasons has one
// entry per kept snapshot, in the order of keep. Snapshots with equal times
// are ordered by descending ID, so the one "latest" resolves to counts as
// the newer. See [ExpirePolicy] for the rules; they are restic's.
func ApplyPolicy(list []*snapshot.Snapshot, p ExpirePolicy) (keep, remove []*snapshot.Snapshot, reasons []KeepReason) {
	return applyPolicy(list, p, time.Now())
}

func applyPolicy(list []*snapshot.Snapshot, p ExpirePolicy, now time.Time) (keep, remove []*snapshot.Snapshot, reasons []KeepReason) {
	if len(list) == 0 {
		return nil, nil, nil
	}
	sorted := newestFirst(list)

	// The reference point of the Within rules: the newest snapshot that is
	// not in the future (restic ignores future ones here, so a clock that
	// was ahead does not make every other snapshot look old).
	var latest time.Time
	for _, sn := range sorted {
		if sn.Time.After(latest) && sn.Time.Before(now) {
			latest = sn.Time
		}
	}

	type counted struct {
		count int
		bucket
		counter string
	}
	buckets := [...]counted{
		{p.Last, bucket{byPosition, -1, "last snapshot"}, "last"},
		{p.Hourly, bucket{byHour, -1, "hourly snapshot"}, "hourly"},
		{p.Daily, bucket{byDay, -1, "daily snapshot"}, "daily"},
		{p.Weekly, bucket{byWeek, -1, "weekly snapshot"}, "weekly"},
		{p.Monthly, bucket{byMonth, -1, "monthly snapshot"}, "monthly"},
		{p.Yearly, bucket{byYear, -1, "yearly snapshot"}, "yearly"},
	}
	type within struct {
		d Duration
		bucket
	}
	withins := [...]within{
		{p.WithinHourly, bucket{byHour, -1, "hourly within"}},
		{p.WithinDaily, bucket{byDay, -1, "daily within"}},
		{p.WithinWeekly, bucket{byWeek, -1, "weekly within"}},
		{p.WithinMonthly, bucket{byMonth, -1, "monthly within"}},
		{p.WithinYearly, bucket{byYear, -1, "yearly within"}},
	}

	for nr, sn := range sorted {
		var matches []string
		oldest := nr == len(sorted)-1

		for _, l := range p.Tags {
			if l.Matches(sn) {
				matches = append(matches, "has tags "+l.String())
			}
		}
		if !p.Within.Zero() && sn.Time.After(p.Within.before(latest)) {
			matches = append(matches, "within "+p.Within.String())
		}
		for i := range buckets {
			b := &buckets[i]
			if b.count <= 0 && b.count != Unlimited {
				continue
			}
			reason, ok := b.take(sn.Time, nr, oldest)
			if !ok {
				continue
			}
			if b.count > 0 {
				b.count--
			}
			matches = append(matches, reason)
		}
		for i := range withins {
			w := &withins[i]
			if w.d.Zero() || !sn.Time.After(w.d.before(latest)) {
				continue
			}
			reason, ok := w.take(sn.Time, nr, oldest)
			if !ok {
				continue
			}
			matches = append(matches, reason+" "+w.d.String())
		}

		if len(matches) == 0 {
			remove = append(remove, sn)
			continue
		}
		counters := make(map[string]int)
		for _, b := range buckets {
			if b.count != 0 {
				counters[b.counter] = b.count
			}
		}
		keep = append(keep, sn)
		reasons = append(reasons, KeepReason{Snapshot: sn, Matches: matches, Counters: counters})
	}
	return keep, remove, reasons
}

// bucket follows one rule of a policy over the snapshots, newest first:
// each snapshot that opens a new bucket (hour, day, ..., or position) is
// kept for reason.
type bucket struct {
	key    bucketKey
	last   int // the bucket of the snapshot kept last; -1 before the first
	reason string
}

// take reports whether the snapshot at time t and position nr opens a new
// bucket, and why it is kept. The oldest snapshot is kept even in the
// bucket of the one before ("oldest" and the reason).
func (b *bucket) take(t time.Time, nr int, oldest bool) (string, bool) {
	v := b.key(t, nr)
	if v == b.last && !oldest {
		return "", false
	}
	reason := b.reason
	if v == b.last {
		reason = "oldest " + reason
	}
	b.last = v
	return reason, true
}

// newestFirst returns a copy of list sorted newest first; equal times are
// ordered by descending ID, and otherwise keep their order.
func newestFirst(list []*snapshot.Snapshot) []*snapshot.Snapshot {
	s := append([]*snapshot.Snapshot(nil), list...)
	sort.SliceStable(s, func(i, j int) bool {
		if !s[i].Time.Equal(s[j].Time) {
			return s[i].Time.After(s[j].Time)
		}
		return bytes.Compare(s[i].ID[:], s[j].ID[:]) > 0
	})
	return s
}

// GroupKey is what the snapshots of one group share. Fields not grouped by
// are empty. Paths and Tags are sorted.
type GroupKey struct {
	Hostname string   `json:"hostname"`
	Paths    []string `json:"paths"`
	Tags     []string `json:"tags"`
}

// String describes the group as restic does: "host h, path [/a /b], tags [t]".
func (k GroupKey) String() string {
	var parts []string
	if k.Hostname != "" {
		parts = append(parts, "host "+k.Hostname)
	}
	if len(k.Paths) > 0 {
		parts = append(parts, fmt.Sprintf("path %v", k.Paths))
	}
	if len(k.Tags) > 0 {
		parts = append(parts, fmt.Sprintf("tags %v", k.Tags))
	}
	return strings.Join(parts, ", ")
}

// ErrInvalidGroupBy is returned by GroupSnapshots for an unknown grouping.
var ErrInvalidGroupBy = errors.New("invalid --group-by value")

// GroupSnapshots sorts snapshots into groups by any of "host", "paths" and
// "tags" (a comma-separated list; "hosts", "path" and "tag" are accepted
// too). The empty string puts all snapshots into one group. Paths and tags
// compare as sorted sets. The maps are keyed by the JSON encoding of the
// group's [GroupKey]; each group keeps the order of list. list and its
// snapshots are not modified.
func GroupSnapshots(list []*snapshot.Snapshot, groupBy string) (map[string][]*snapshot.Snapshot, map[string]GroupKey, error) {
	var byHost, byPaths, byTags bool
	for _, opt := range strings.Split(groupBy, ",") {
		switch strings.TrimSpace(opt) {
		case "host", "hosts":
			byHost = true
		case "path", "paths":
			byPaths = true
		case "tag", "tags":
			byTags = true
		case "":
		default:
			return nil, nil, fmt.Errorf("%w %q: unknown grouping %q (want host, paths or tags)", ErrInvalidGroupBy, groupBy, opt)
		}
	}

	groups := make(map[string][]*snapshot.Snapshot)
	keys := make(map[string]GroupKey)
	for _, sn := range list {
		var k GroupKey
		if byHost {
			k.Hostname = sn.Hostname
		}
		if byPaths {
			k.Paths = sortedCopy(sn.Paths)
		}
		if byTags {
			k.Tags = sortedCopy(sn.Tags)
		}
		b, err := json.Marshal(k)
		if err != nil {
			return nil, nil, fmt.Errorf("group snapshots: %w", err)
		}
		groups[string(b)] = append(groups[string(b)], sn)
		keys[string(b)] = k
	}
	return groups, keys, nil
}

// sortedCopy returns a sorted copy of s, or nil when s is empty.
func sortedCopy(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}
