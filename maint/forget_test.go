package maint

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the DST test needs America/New_York on any machine

	"dj/repo/crypto"
	"dj/repo/snapshot"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want Duration
	}{
		{"", Duration{}},
		{"1y2m3d4h", Duration{Years: 1, Months: 2, Days: 3, Hours: 4}},
		{"  5d ", Duration{Days: 5}},
		{"3h2d", Duration{Days: 2, Hours: 3}},
		{"1d7d", Duration{Days: 7}},
		{"0d", Duration{}},
		{"9999y", Duration{Years: 9999}},
		{"1000000h", Duration{Hours: 1000000}},
		{"007m", Duration{Months: 7}},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"d", "5", "5x", "-1d", "1.5d", "1d 2h", "1w", "99999999999999999999d", "1000001h", "1D"} {
		if d, err := ParseDuration(bad); !errors.Is(err, ErrInvalidDuration) {
			t.Errorf("ParseDuration(%q) = %+v, %v; want ErrInvalidDuration", bad, d, err)
		}
	}
}

func TestDurationString(t *testing.T) {
	for _, tt := range []struct {
		d    Duration
		want string
	}{
		{Duration{}, ""},
		{Duration{Years: 1, Months: 2, Days: 3, Hours: 4}, "1y2m3d4h"},
		{Duration{Years: 1, Days: 3}, "1y3d"},
		{Duration{Hours: 36}, "36h"},
	} {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.d, got, tt.want)
		}
		back, err := ParseDuration(tt.want)
		if err != nil || back != tt.d {
			t.Errorf("round trip of %q = %+v, %v", tt.want, back, err)
		}
		if tt.d.Zero() != (tt.want == "") {
			t.Errorf("%+v.Zero() = %v", tt.d, tt.d.Zero())
		}
	}
}

func TestParseKeepCount(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "7": 7, " 3 ": 3, "unlimited": Unlimited, "-1": -1} {
		if got, err := ParseKeepCount(in); err != nil || got != want {
			t.Errorf("ParseKeepCount(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-2", "1.5", "all"} {
		if _, err := ParseKeepCount(bad); err == nil {
			t.Errorf("ParseKeepCount(%q) succeeded", bad)
		}
	}
}

func TestParseTagList(t *testing.T) {
	for in, want := range map[string]TagList{
		"a":        {"a"},
		"a,b":      {"a", "b"},
		" a , b ":  {"a", "b"},
		"":         {""},
		"a,,b":     {"a", "", "b"},
		"x y,z":    {"x y", "z"},
		"only one": {"only one"},
	} {
		if got := ParseTagList(in); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseTagList(%q) = %q, want %q", in, got, want)
		}
	}
	if s := (TagList{"a", "b"}).String(); s != "[a, b]" {
		t.Errorf("String = %q", s)
	}
}

func TestPolicyEmptyValidateString(t *testing.T) {
	d7 := Duration{Days: 7}
	tests := []struct {
		p     ExpirePolicy
		empty bool
		valid bool
		str   string
	}{
		{ExpirePolicy{}, true, true, "remove"},
		{ExpirePolicy{Tags: []TagList{}}, true, true, "remove"},
		{ExpirePolicy{Last: 1}, false, true, "keep 1 latest snapshots"},
		{ExpirePolicy{Daily: 7, Weekly: 4, Monthly: Unlimited}, false, true, "keep 7 daily, 4 weekly, all monthly snapshots"},
		{ExpirePolicy{WithinDaily: d7, WithinYearly: Duration{Years: 75}}, false, true,
			"keep daily snapshots within 7d, yearly snapshots within 75y"},
		{ExpirePolicy{Hourly: 2, WithinWeekly: Duration{Months: 1}}, false, true,
			"keep 2 hourly snapshots, weekly snapshots within 1m"},
		{ExpirePolicy{Tags: []TagList{{"a", "b"}, {"c"}}}, false, true, "keep all snapshots with tags [[a, b] [c]]"},
		{ExpirePolicy{Within: d7}, false, true, "keep all snapshots within 7d of the newest"},
		{ExpirePolicy{Last: 2, Tags: []TagList{{"x"}}, Within: Duration{Hours: 5}}, false, true,
			"keep 2 latest snapshots and all snapshots with tags [[x]] and all snapshots within 5h of the newest"},
		{ExpirePolicy{Yearly: -2}, false, false, ""},
		{ExpirePolicy{WithinMonthly: Duration{Days: -1}}, false, false, ""},
		{ExpirePolicy{Within: Duration{Hours: maxDurationValue + 1}}, false, false, ""},
	}
	for i, tt := range tests {
		if got := tt.p.Empty(); got != tt.empty {
			t.Errorf("%d: Empty() = %v, want %v", i, got, tt.empty)
		}
		if err := tt.p.Validate(); (err == nil) != tt.valid {
			t.Errorf("%d: Validate() = %v, want valid=%v", i, err, tt.valid)
		}
		if tt.valid {
			if got := tt.p.String(); got != tt.str {
				t.Errorf("%d: String() = %q, want %q", i, got, tt.str)
			}
		}
	}
}

// mkSnap makes a snapshot named label (its ID is derived from the label, so
// equal labels sort the same way every time) at an RFC 3339 time.
func mkSnap(label, at string, tags ...string) *snapshot.Snapshot {
	tm, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		panic(err)
	}
	var id crypto.ID
	copy(id[:], label)
	return &snapshot.Snapshot{Time: tm, Tags: tags, ID: id, Hostname: "h", Paths: []string{"/p"}}
}

func label(sn *snapshot.Snapshot) string { return strings.TrimRight(string(sn.ID[:]), "\x00") }

func labels(list []*snapshot.Snapshot) []string {
	var out []string
	for _, sn := range list {
		out = append(out, label(sn))
	}
	return out
}

// policyNow is the "now" of the table tests: after every snapshot in them
// except the deliberately future ones.
var policyNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestApplyPolicy(t *testing.T) {
	// A week with gaps: two snapshots on some days, none on others.
	week := []*snapshot.Snapshot{
		mkSnap("mon1", "2024-01-01T09:00:00Z"),
		mkSnap("mon2", "2024-01-01T18:00:00Z"),
		mkSnap("wed", "2024-01-03T12:00:00Z"),
		mkSnap("fri1", "2024-01-05T08:00:00Z"),
		mkSnap("fri2", "2024-01-05T08:30:00Z"),
		mkSnap("sun", "2024-01-07T23:59:59Z"),
		mkSnap("nextmon", "2024-01-08T00:00:00Z"),
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	plus2 := time.FixedZone("+02", 2*3600)
	plus5 := time.FixedZone("+05", 5*3600)
	at := func(l string, tm time.Time, tags ...string) *snapshot.Snapshot {
		sn := mkSnap(l, "2000-01-01T00:00:00Z", tags...)
		sn.Time = tm
		return sn
	}

	type reasons map[string][]string
	tests := []struct {
		name     string
		list     []*snapshot.Snapshot
		p        ExpirePolicy
		keep     []string // newest first
		reasons  reasons  // matches per kept label; nil skips the check
		counters map[string]map[string]int
	}{
		{name: "empty policy removes all", list: week, p: ExpirePolicy{}, keep: nil},
		{name: "last 2", list: week, p: ExpirePolicy{Last: 2},
			keep:     []string{"nextmon", "sun"},
			reasons:  reasons{"nextmon": {"last snapshot"}, "sun": {"last snapshot"}},
			counters: map[string]map[string]int{"nextmon": {"last": 1}, "sun": {}}},
		{name: "last more than there are", list: week, p: ExpirePolicy{Last: 99},
			keep: []string{"nextmon", "sun", "fri2", "fri1", "wed", "mon2", "mon1"},
			// Every snapshot is its own period, so the oldest is an ordinary "last snapshot".
			reasons: reasons{"mon1": {"last snapshot"}}},
		{name: "last unlimited", list: week, p: ExpirePolicy{Last: Unlimited},
			keep:     []string{"nextmon", "sun", "fri2", "fri1", "wed", "mon2", "mon1"},
			counters: map[string]map[string]int{"mon1": {"last": -1}}},
		{name: "daily skips days without snapshots", list: week, p: ExpirePolicy{Daily: 3},
			keep: []string{"nextmon", "sun", "fri2"},
			counters: map[string]map[string]int{"nextmon": {"daily": 2}, "sun": {"daily": 1},
				"fri2": {}}},
		{name: "daily keeps newest of each day and the oldest while count is left",
			list: week, p: ExpirePolicy{Daily: 10},
			keep: []string{"nextmon", "sun", "fri2", "wed", "mon2", "mon1"},
			reasons: reasons{"fri2": {"daily snapshot"}, "mon2": {"daily snapshot"},
				"mon1": {"oldest daily snapshot"}},
			counters: map[string]map[string]int{"mon1": {"daily": 4}}},
		{name: "daily exactly used up: no oldest", list: week, p: ExpirePolicy{Daily: 5},
			keep: []string{"nextmon", "sun", "fri2", "wed", "mon2"}},
		{name: "daily unlimited", list: week, p: ExpirePolicy{Daily: Unlimited},
			keep:    []string{"nextmon", "sun", "fri2", "wed", "mon2", "mon1"},
			reasons: reasons{"mon1": {"oldest daily snapshot"}}},
		{name: "weekly: ISO weeks start on Monday", list: week, p: ExpirePolicy{Weekly: 2},
			keep:    []string{"nextmon", "sun"},
			reasons: reasons{"nextmon": {"weekly snapshot"}, "sun": {"weekly snapshot"}}},
		{name: "hourly", list: week, p: ExpirePolicy{Hourly: 4},
			keep: []string{"nextmon", "sun", "fri2", "wed"}},
		{name: "hourly groups one hour", list: []*snapshot.Snapshot{
			mkSnap("a", "2024-01-01T10:00:00Z"), mkSnap("b", "2024-01-01T10:59:59Z"),
			mkSnap("c", "2024-01-01T11:00:00Z"), mkSnap("d", "2024-01-01T12:30:00Z"),
		}, p: ExpirePolicy{Hourly: 3}, keep: []string{"d", "c", "b"}},
		{name: "combined rules list every match", list: week,
			p:    ExpirePolicy{Last: 1, Daily: 2, Weekly: 2, Monthly: 1, Yearly: 1},
			keep: []string{"nextmon", "sun"},
			reasons: reasons{
				"nextmon": {"last snapshot", "daily snapshot", "weekly snapshot", "monthly snapshot", "yearly snapshot"},
				"sun":     {"daily snapshot", "weekly snapshot"},
			},
			counters: map[string]map[string]int{"nextmon": {"daily": 1, "weekly": 1}, "sun": {}}},
		{name: "monthly and yearly across a year end", list: []*snapshot.Snapshot{
			mkSnap("nov", "2023-11-15T00:00:00Z"), mkSnap("dec1", "2023-12-01T00:00:00Z"),
			mkSnap("dec2", "2023-12-31T23:00:00Z"), mkSnap("jan", "2024-01-02T00:00:00Z"),
		}, p: ExpirePolicy{Monthly: 2, Yearly: 2}, keep: []string{"jan", "dec2"},
			reasons: reasons{"jan": {"monthly snapshot", "yearly snapshot"}, "dec2": {"monthly snapshot", "yearly snapshot"}}},
		{name: "weekly across a year end: ISO week 2020-53 spans two years", list: []*snapshot.Snapshot{
			mkSnap("dec20", "2020-12-20T12:00:00Z"), mkSnap("dec31", "2020-12-31T12:00:00Z"),
			mkSnap("jan1", "2021-01-01T12:00:00Z"), mkSnap("jan4", "2021-01-04T12:00:00Z"),
		}, p: ExpirePolicy{Weekly: 3}, keep: []string{"jan4", "jan1", "dec20"}},
		{name: "equal times: higher ID counts as newer", list: []*snapshot.Snapshot{
			mkSnap("b", "2024-01-01T10:00:00Z"), mkSnap("c", "2024-01-01T10:00:00Z"),
			mkSnap("a", "2024-01-01T10:00:00Z"),
		}, p: ExpirePolicy{Last: 1}, keep: []string{"c"}},
		{name: "equal times, daily keeps one plus the oldest", list: []*snapshot.Snapshot{
			mkSnap("b", "2024-01-01T10:00:00Z"), mkSnap("c", "2024-01-01T10:00:00Z"),
			mkSnap("a", "2024-01-01T10:00:00Z"),
		}, p: ExpirePolicy{Daily: 2}, keep: []string{"c", "a"},
			reasons: reasons{"c": {"daily snapshot"}, "a": {"oldest daily snapshot"}}},
		{name: "buckets use the snapshot's own time zone", list: []*snapshot.Snapshot{
			// Newest: 21:30 UTC on the 10th, local day 10th (+02).
			at("x", time.Date(2024, 3, 10, 23, 30, 0, 0, plus2)),
			// 19:30 UTC on the 10th, but local day 11th (+05).
			at("y", time.Date(2024, 3, 11, 0, 30, 0, 0, plus5)),
			// 18:00 UTC on the 10th, local day 10th (UTC).
			at("z", time.Date(2024, 3, 10, 18, 0, 0, 0, time.UTC)),
			at("old", time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)),
		}, p: ExpirePolicy{Daily: 3}, keep: []string{"x", "y", "z"}},
		{name: "same instants in UTC share a day", list: []*snapshot.Snapshot{
			at("x", time.Date(2024, 3, 10, 23, 30, 0, 0, plus2).UTC()),
			at("y", time.Date(2024, 3, 11, 0, 30, 0, 0, plus5).UTC()),
			at("z", time.Date(2024, 3, 10, 18, 0, 0, 0, time.UTC)),
			at("old", time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)),
		}, p: ExpirePolicy{Daily: 3}, keep: []string{"x", "old"}},
		{name: "within: exactly at the boundary is removed", list: []*snapshot.Snapshot{
			mkSnap("latest", "2024-05-10T12:00:00Z"),
			mkSnap("inside", "2024-05-09T12:00:00.000000001Z"),
			mkSnap("boundary", "2024-05-09T12:00:00Z"),
			mkSnap("outside", "2024-05-01T00:00:00Z"),
		}, p: ExpirePolicy{Within: Duration{Days: 1}}, keep: []string{"latest", "inside"},
			reasons:  reasons{"latest": {"within 1d"}, "inside": {"within 1d"}},
			counters: map[string]map[string]int{"latest": {}}},
		{name: "within hours and days add up", list: []*snapshot.Snapshot{
			mkSnap("latest", "2024-05-10T12:00:00Z"),
			mkSnap("in", "2024-05-09T00:00:01Z"),
			mkSnap("at", "2024-05-09T00:00:00Z"),
		}, p: ExpirePolicy{Within: Duration{Days: 1, Hours: 12}}, keep: []string{"latest", "in"}},
		{name: "within a month is calendar arithmetic (Mar 31 - 1m = Mar 2)", list: []*snapshot.Snapshot{
			mkSnap("latest", "2024-03-31T00:00:00Z"),
			mkSnap("mar3", "2024-03-03T00:00:00Z"),
			mkSnap("mar2", "2024-03-02T00:00:00Z"),
			mkSnap("mar1", "2024-03-01T00:00:00Z"),
		}, p: ExpirePolicy{Within: Duration{Months: 1}}, keep: []string{"latest", "mar3"}},
		{name: "within a day across DST is 23 hours", list: []*snapshot.Snapshot{
			at("latest", time.Date(2024, 3, 10, 12, 0, 0, 0, ny)), // EDT
			at("23h30", time.Date(2024, 3, 9, 11, 30, 0, 0, ny)),  // EST, 23.5 h earlier
			at("22h30", time.Date(2024, 3, 9, 12, 30, 0, 0, ny)),
		}, p: ExpirePolicy{Within: Duration{Days: 1}}, keep: []string{"latest", "22h30"}},
		{name: "within counts from the newest past snapshot, future ones are kept", list: []*snapshot.Snapshot{
			mkSnap("future", "2031-06-01T00:00:00Z"),
			mkSnap("latest", "2024-05-10T12:00:00Z"),
			mkSnap("in", "2024-05-10T00:00:00Z"),
			mkSnap("out", "2024-05-01T00:00:00Z"),
		}, p: ExpirePolicy{Within: Duration{Days: 1}}, keep: []string{"future", "latest", "in"}},
		{name: "all snapshots in the future: within keeps all", list: []*snapshot.Snapshot{
			mkSnap("f1", "2031-06-01T00:00:00Z"), mkSnap("f2", "2040-06-01T00:00:00Z"),
		}, p: ExpirePolicy{Within: Duration{Hours: 1}}, keep: []string{"f2", "f1"}},
		{name: "future snapshots count normally for last", list: []*snapshot.Snapshot{
			mkSnap("future", "2031-06-01T00:00:00Z"), mkSnap("latest", "2024-05-10T12:00:00Z"),
		}, p: ExpirePolicy{Last: 1}, keep: []string{"future"}},
		{name: "within-daily keeps one per day inside the window", list: week,
			p:    ExpirePolicy{WithinDaily: Duration{Days: 3}},
			keep: []string{"nextmon", "sun", "fri2"},
			reasons: reasons{"nextmon": {"daily within 3d"}, "sun": {"daily within 3d"},
				"fri2": {"daily within 3d"}}},
		{name: "within-daily: oldest inside the window", list: week,
			p:       ExpirePolicy{WithinDaily: Duration{Days: 30}},
			keep:    []string{"nextmon", "sun", "fri2", "wed", "mon2", "mon1"},
			reasons: reasons{"mon1": {"oldest daily within 30d"}}},
		{name: "within-weekly and within-hourly together", list: week,
			p: ExpirePolicy{WithinWeekly: Duration{Days: 14}, WithinHourly: Duration{Hours: 1}},
			// sun (23:59:59) is within one hour of nextmon (00:00) but in another hour.
			keep: []string{"nextmon", "sun", "mon1"},
			reasons: reasons{"nextmon": {"hourly within 1h", "weekly within 14d"},
				"sun": {"hourly within 1h", "weekly within 14d"}, "mon1": {"oldest weekly within 14d"}}},
		{name: "within-monthly and within-yearly", list: []*snapshot.Snapshot{
			mkSnap("a", "2024-03-05T00:00:00Z"), mkSnap("b", "2024-03-01T00:00:00Z"),
			mkSnap("c", "2024-02-20T00:00:00Z"), mkSnap("d", "2023-12-01T00:00:00Z"),
			mkSnap("e", "2022-06-01T00:00:00Z"),
		}, p: ExpirePolicy{WithinMonthly: Duration{Months: 2}, WithinYearly: Duration{Years: 1}},
			keep: []string{"a", "c", "d"},
			reasons: reasons{"a": {"monthly within 2m", "yearly within 1y"},
				"c": {"monthly within 2m"}, "d": {"yearly within 1y"}}},
		{name: "tags: one list, all tags required, alternatives, untagged", list: []*snapshot.Snapshot{
			mkSnap("foo", "2024-01-05T00:00:00Z", "foo"),
			mkSnap("foobar", "2024-01-04T00:00:00Z", "bar", "foo"),
			mkSnap("bar", "2024-01-03T00:00:00Z", "bar"),
			mkSnap("none", "2024-01-02T00:00:00Z"),
			mkSnap("baz", "2024-01-01T00:00:00Z", "baz"),
		}, p: ExpirePolicy{Tags: []TagList{{"foo", "bar"}, {"bar"}, {""}}},
			keep: []string{"foobar", "bar", "none"},
			reasons: reasons{"foobar": {"has tags [foo, bar]", "has tags [bar]"},
				"bar": {"has tags [bar]"}, "none": {"has tags []"}}},
		{name: "tags together with last: tag reasons come first", list: []*snapshot.Snapshot{
			mkSnap("new", "2024-01-05T00:00:00Z", "x"),
			mkSnap("old", "2024-01-01T00:00:00Z", "x"),
			mkSnap("mid", "2024-01-03T00:00:00Z"),
		}, p: ExpirePolicy{Tags: []TagList{{"x"}}, Last: 1, Within: Duration{Days: 1}},
			keep:     []string{"new", "old"},
			reasons:  reasons{"new": {"has tags [x]", "within 1d", "last snapshot"}, "old": {"has tags [x]"}},
			counters: map[string]map[string]int{"new": {}, "old": {}}},
		{name: "unlimited monthly with counted daily shows both counters", list: week,
			p:        ExpirePolicy{Daily: 3, Monthly: Unlimited},
			keep:     []string{"nextmon", "sun", "fri2", "mon1"},
			reasons:  reasons{"mon1": {"oldest monthly snapshot"}},
			counters: map[string]map[string]int{"nextmon": {"daily": 2, "monthly": -1}, "mon1": {"monthly": -1}}},
		{name: "single snapshot", list: week[:1], p: ExpirePolicy{Daily: 1},
			keep: []string{"mon1"}, reasons: reasons{"mon1": {"daily snapshot"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]*snapshot.Snapshot(nil), tt.list...)
			keep, remove, rs := applyPolicy(tt.list, tt.p, policyNow)
			if !reflect.DeepEqual(in, tt.list) {
				t.Errorf("input list was modified")
			}
			if got := labels(keep); !reflect.DeepEqual(got, tt.keep) {
				t.Errorf("keep = %v, want %v", got, tt.keep)
			}
			if len(keep)+len(remove) != len(tt.list) || len(rs) != len(keep) {
				t.Fatalf("%d kept + %d removed of %d, %d reasons", len(keep), len(remove), len(tt.list), len(rs))
			}
			all := newestFirst(tt.list)
			kept := map[string]bool{}
			for _, l := range tt.keep {
				kept[l] = true
			}
			var wantRemove []string
			for _, sn := range all {
				if !kept[label(sn)] {
					wantRemove = append(wantRemove, label(sn))
				}
			}
			if got := labels(remove); !reflect.DeepEqual(got, wantRemove) {
				t.Errorf("remove = %v, want %v", got, wantRemove)
			}
			for i, r := range rs {
				if r.Snapshot != keep[i] {
					t.Errorf("reason %d is for %s, not %s", i, label(r.Snapshot), label(keep[i]))
				}
				if r.Counters == nil || len(r.Matches) == 0 {
					t.Errorf("reason for %s: %+v", label(r.Snapshot), r)
				}
				if want, ok := tt.reasons[label(r.Snapshot)]; ok && !reflect.DeepEqual(r.Matches, want) {
					t.Errorf("matches for %s = %q, want %q", label(r.Snapshot), r.Matches, want)
				}
				if want, ok := tt.counters[label(r.Snapshot)]; ok && !reflect.DeepEqual(r.Counters, want) {
					t.Errorf("counters for %s = %v, want %v", label(r.Snapshot), r.Counters, want)
				}
			}
		})
	}
}

func TestApplyPolicyEmptyList(t *testing.T) {
	keep, remove, reasons := ApplyPolicy(nil, ExpirePolicy{Last: 3})
	if keep != nil || remove != nil || reasons != nil {
		t.Errorf("got %v %v %v", keep, remove, reasons)
	}
}

// TestApplyPolicyNaive checks every counted rule on random snapshot lists
// against a direct reading of the documentation: keep the newest snapshot
// of each of the n newest periods that hold one, plus the oldest snapshot
// when fewer than n periods exist.
func TestApplyPolicyNaive(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	periods := []struct {
		name string
		key  func(time.Time) string
		set  func(p *ExpirePolicy, n int)
	}{
		{"last", nil, func(p *ExpirePolicy, n int) { p.Last = n }},
		{"hourly", func(t time.Time) string { return t.Format("2006010215") }, func(p *ExpirePolicy, n int) { p.Hourly = n }},
		{"daily", func(t time.Time) string { return t.Format("20060102") }, func(p *ExpirePolicy, n int) { p.Daily = n }},
		{"weekly", func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprint(y, "-", w) }, func(p *ExpirePolicy, n int) { p.Weekly = n }},
		{"monthly", func(t time.Time) string { return t.Format("200601") }, func(p *ExpirePolicy, n int) { p.Monthly = n }},
		{"yearly", func(t time.Time) string { return t.Format("2006") }, func(p *ExpirePolicy, n int) { p.Yearly = n }},
	}
	spans := []time.Duration{6 * time.Hour, 10 * 24 * time.Hour, 400 * 24 * time.Hour, 5 * 365 * 24 * time.Hour}
	for iter := 0; iter < 300; iter++ {
		span := spans[rng.Intn(len(spans))]
		var list []*snapshot.Snapshot
		for i := 0; i < 1+rng.Intn(40); i++ {
			tm := base.Add(time.Duration(rng.Int63n(int64(span))))
			if rng.Intn(8) == 0 && len(list) > 0 {
				tm = list[rng.Intn(len(list))].Time // duplicate timestamp
			}
			var id crypto.ID
			rng.Read(id[:])
			list = append(list, &snapshot.Snapshot{Time: tm, ID: id})
		}
		sorted := newestFirst(list)
		for _, per := range periods {
			n := rng.Intn(12)
			if rng.Intn(6) == 0 {
				n = Unlimited
			}
			var p ExpirePolicy
			per.set(&p, n)

			want := map[*snapshot.Snapshot]bool{}
			seen := map[string]bool{}
			for i, sn := range sorted {
				k := fmt.Sprint(i)
				if per.key != nil {
					k = per.key(sn.Time)
				}
				if !seen[k] && (n == Unlimited || len(seen) < n) {
					want[sn] = true
				}
				seen[k] = true
			}
			if n == Unlimited || len(seen) < n {
				want[sorted[len(sorted)-1]] = true
			}
			if n == 0 {
				want = map[*snapshot.Snapshot]bool{}
			}

			keep, _, _ := applyPolicy(list, p, policyNow)
			got := map[*snapshot.Snapshot]bool{}
			for _, sn := range keep {
				got[sn] = true
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("iteration %d, %s %d: kept %d snapshots, want %d", iter, per.name, n, len(got), len(want))
			}
		}
	}
}

func TestKeepReasonJSON(t *testing.T) {
	sn := mkSnap("a", "2024-01-01T10:00:00Z")
	_, _, rs := applyPolicy([]*snapshot.Snapshot{sn}, ExpirePolicy{Last: 1}, policyNow)
	b, err := json.Marshal(rs[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if string(m["matches"]) != `["last snapshot"]` || string(m["counters"]) != `{}` {
		t.Errorf("JSON = %s", b)
	}
	if _, ok := m["snapshot"]; !ok {
		t.Errorf("no snapshot in %s", b)
	}
	_, _, rs = applyPolicy([]*snapshot.Snapshot{sn}, ExpirePolicy{Daily: 3, Weekly: Unlimited}, policyNow)
	b, _ = json.Marshal(rs[0].Counters)
	if string(b) != `{"daily":2,"weekly":-1}` {
		t.Errorf("counters JSON = %s", b)
	}
}

func TestGroupSnapshots(t *testing.T) {
	mk := func(host string, paths, tags []string) *snapshot.Snapshot {
		return &snapshot.Snapshot{Hostname: host, Paths: paths, Tags: tags}
	}
	a := mk("h1", []string{"/b", "/a"}, []string{"y", "x"})
	b := mk("h1", []string{"/a", "/b"}, []string{"x", "y"})
	c := mk("h2", []string{"/a", "/b"}, nil)
	d := mk("h1", []string{"/a"}, []string{})
	all := []*snapshot.Snapshot{a, b, c, d}

	tests := []struct {
		groupBy string
		want    map[string][]*snapshot.Snapshot
	}{
		{"", map[string][]*snapshot.Snapshot{
			`{"hostname":"","paths":null,"tags":null}`: {a, b, c, d}}},
		{"host", map[string][]*snapshot.Snapshot{
			`{"hostname":"h1","paths":null,"tags":null}`: {a, b, d},
			`{"hostname":"h2","paths":null,"tags":null}`: {c}}},
		{"host,paths", map[string][]*snapshot.Snapshot{
			`{"hostname":"h1","paths":["/a","/b"],"tags":null}`: {a, b},
			`{"hostname":"h2","paths":["/a","/b"],"tags":null}`: {c},
			`{"hostname":"h1","paths":["/a"],"tags":null}`:      {d}}},
		{"paths", map[string][]*snapshot.Snapshot{
			`{"hostname":"","paths":["/a","/b"],"tags":null}`: {a, b, c},
			`{"hostname":"","paths":["/a"],"tags":null}`:      {d}}},
		{"tags", map[string][]*snapshot.Snapshot{
			`{"hostname":"","paths":null,"tags":["x","y"]}`: {a, b},
			`{"hostname":"","paths":null,"tags":null}`:      {c, d}}},
		{"hosts, path,tag", map[string][]*snapshot.Snapshot{
			`{"hostname":"h1","paths":["/a","/b"],"tags":["x","y"]}`: {a, b},
			`{"hostname":"h2","paths":["/a","/b"],"tags":null}`:      {c},
			`{"hostname":"h1","paths":["/a"],"tags":null}`:           {d}}},
	}
	for _, tt := range tests {
		groups, keys, err := GroupSnapshots(all, tt.groupBy)
		if err != nil {
			t.Fatalf("%q: %v", tt.groupBy, err)
		}
		if !reflect.DeepEqual(groups, tt.want) {
			var got []string
			for k, v := range groups {
				got = append(got, fmt.Sprintf("%s:%d", k, len(v)))
			}
			sort.Strings(got)
			t.Errorf("%q: groups %v", tt.groupBy, got)
		}
		for k := range groups {
			b, _ := json.Marshal(keys[k])
			if string(b) != k {
				t.Errorf("%q: key %s has GroupKey %s", tt.groupBy, k, b)
			}
		}
	}
	if !reflect.DeepEqual(a.Paths, []string{"/b", "/a"}) || !reflect.DeepEqual(a.Tags, []string{"y", "x"}) {
		t.Errorf("GroupSnapshots modified a snapshot: %v %v", a.Paths, a.Tags)
	}
	if _, _, err := GroupSnapshots(all, "host,user"); !errors.Is(err, ErrInvalidGroupBy) {
		t.Errorf("unknown grouping: %v", err)
	}
	k := GroupKey{Hostname: "h", Paths: []string{"/a", "/b"}, Tags: []string{"t"}}
	if s := k.String(); s != "host h, path [/a /b], tags [t]" {
		t.Errorf("String = %q", s)
	}
	if s := (GroupKey{}).String(); s != "" {
		t.Errorf("empty String = %q", s)
	}
}
