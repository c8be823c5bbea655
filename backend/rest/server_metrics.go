// Prometheus metrics of dj serve, written in the text exposition format
// without a client library.

package rest

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// latencyBuckets are the upper bounds (seconds) of the request duration
// histogram.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// metricKey identifies one series family member: the repository ("/" for
// the root, "" for requests that reached none), the user and the answer.
type metricKey struct {
	repo, user, method string
	code               int
}

type repoUser struct{ repo, user string }

// latency is a histogram of request durations.
type latency struct {
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	n      uint64
}

// metrics counts requests, bytes and durations per repository and user.
type metrics struct {
	mu       sync.Mutex
	requests map[metricKey]uint64
	in, out  map[repoUser]uint64
	latency  map[repoUser]*latency
}

func newMetrics() *metrics {
	return &metrics{requests: make(map[metricKey]uint64), in: make(map[repoUser]uint64),
		out: make(map[repoUser]uint64), latency: make(map[repoUser]*latency)}
}

// reqLabels collects a request's labels while it is served.
type reqLabels struct {
	repo, user string
}

// observe records one finished request.
func (m *metrics) observe(l *reqLabels, method string, code int, in, out int64, d time.Duration) {
	ru := repoUser{l.repo, l.user}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[metricKey{l.repo, l.user, method, code}]++
	m.in[ru] += uint64(in)
	m.out[ru] += uint64(out)
	h := m.latency[ru]
	if h == nil {
		h = &latency{counts: make([]uint64, len(latencyBuckets)+1)}
		m.latency[ru] = h
	}
	s := d.Seconds()
	i := sort.SearchFloat64s(latencyBuckets, s)
	h.counts[i]++
	h.sum += s
	h.n++
}

// write sends every series in the text exposition format.
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	b.WriteString("# HELP dj_serve_requests_total Requests answered, by repository, user, method and status.\n")
	b.WriteString("# TYPE dj_serve_requests_total counter\n")
	keys := make([]metricKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, c := keys[i], keys[j]
		if a.repo != c.repo {
			return a.repo < c.repo
		}
		if a.user != c.user {
			return a.user < c.user
		}
		if a.method != c.method {
			return a.method < c.method
		}
		return a.code < c.code
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "dj_serve_requests_total{repo=%s,user=%s,method=%s,code=\"%d\"} %d\n",
			quoteLabel(k.repo), quoteLabel(k.user), quoteLabel(k.method), k.code, m.requests[k])
	}
	rus := make([]repoUser, 0, len(m.latency))
	for ru := range m.latency {
		rus = append(rus, ru)
	}
	sort.Slice(rus, func(i, j int) bool {
		if rus[i].repo != rus[j].repo {
			return rus[i].repo < rus[j].repo
		}
		return rus[i].user < rus[j].user
	})
	for _, f := range []struct {
		name, help string
		vals       map[repoUser]uint64
	}{
		{"dj_serve_received_bytes_total", "Bytes of request bodies read.", m.in},
		{"dj_serve_sent_bytes_total", "Bytes of response bodies written.", m.out},
	} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", f.name, f.help, f.name)
		for _, ru := range rus {
			fmt.Fprintf(&b, "%s{repo=%s,user=%s} %d\n", f.name, quoteLabel(ru.repo), quoteLabel(ru.user), f.vals[ru])
		}
	}
	b.WriteString("# HELP dj_serve_request_duration_seconds Time to answer a request.\n")
	b.WriteString("# TYPE dj_serve_request_duration_seconds histogram\n")
	for _, ru := range rus {
		h := m.latency[ru]
		labels := "repo=" + quoteLabel(ru.repo) + ",user=" + quoteLabel(ru.user)
		var cum uint64
		for i, le := range latencyBuckets {
			cum += h.counts[i]
			fmt.Fprintf(&b, "dj_serve_request_duration_seconds_bucket{%s,le=\"%s\"} %d\n", labels, strconv.FormatFloat(le, 'g', -1, 64), cum)
		}
		cum += h.counts[len(latencyBuckets)]
		fmt.Fprintf(&b, "dj_serve_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", labels, cum)
		fmt.Fprintf(&b, "dj_serve_request_duration_seconds_sum{%s} %g\n", labels, h.sum)
		fmt.Fprintf(&b, "dj_serve_request_duration_seconds_count{%s} %d\n", labels, h.n)
	}
	_, _ = io.WriteString(w, b.String())
}

// quoteLabel quotes a label value as the exposition format wants.
func quoteLabel(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// countingWriter records the status and the bytes of a response.
type countingWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}
