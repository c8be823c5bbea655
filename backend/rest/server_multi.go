// A server of many repositories: one per path under a root directory, as
// restic's rest-server serves them, with users, private repositories,
// append-only and quotas per user or repository.

package rest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"dj/backend"
	"dj/backend/local"
)

// MultiOptions configures NewMultiServer.
type MultiOptions struct {
	// ServerOptions apply to every repository. AppendOnly makes the whole
	// server append-only; Users is the fixed set of users when
	// HtpasswdFile is empty; Init is not used.
	ServerOptions
	// Root is the directory that holds the repositories.
	Root string
	// HtpasswdFile, when set, names the htpasswd file of the users (see
	// ReadHtpasswd). It is read again when it changes; a changed file that
	// does not parse, or lists no user, is reported and the previous users
	// stay.
	HtpasswdFile string
	// PrivateRepos lets a user reach only the repositories under
	// /<user>/; others answer 403. It needs users.
	PrivateRepos bool
	// UsersConfig, when set, names the JSON policy file (see Policy),
	// read again when it changes.
	UsersConfig string
	// MaxSize bounds the bytes stored under Root; 0 means no limit.
	MaxSize int64
	// Metrics serves Prometheus metrics at /metrics: requests, bytes in
	// and out, and a latency histogram per repository and user. They need
	// authentication (with PrivateRepos, as the user "metrics", as in
	// rest-server) unless MetricsNoAuth.
	Metrics       bool
	MetricsNoAuth bool
	// GroupAccessible makes the repositories' files readable, and their
	// directories writable, by their group (local.Local.ShareWithGroup).
	GroupAccessible bool
	// ProxyAuthHeader, when set, names a request header that carries the
	// user name, set by an authenticating reverse proxy in front of the
	// server; a request with it is not asked for a password. A request
	// without it needs a password from the htpasswd file, when there is
	// one, and is refused otherwise.
	ProxyAuthHeader string
	// AccessLog, when not nil, receives one JSON object per request and
	// line: time, remote address, user, repository, method, path,
	// status, bytes in and out, duration in seconds.
	AccessLog io.Writer
}

// multiServer is the http.Handler returned by NewMultiServer.
type multiServer struct {
	opts     MultiOptions
	root     string
	uploads  chan struct{}
	auth     *authCache
	htpasswd *watchedFile[map[string]string]
	policy   *watchedFile[*Policy]
	quotas   *quotaBook
	metrics  *metrics // nil: no metrics
	logMu    sync.Mutex

	mu    sync.Mutex
	repos map[string]*local.Local // directory -> its backend
}

// NewMultiServer returns an http.Handler that serves every repository
// under opts.Root over restic's REST protocol (version 1 and 2), each at
// its path: the repository in Root/ann/laptop answers at /ann/laptop/, the
// one in Root itself at /. A client's init (POST /<path>/?create=true)
// creates a repository; requests to a path without one (a directory
// without the keys directory that init creates) answer 404.
// Uploads are verified as NewServer verifies them; an upload that would
// take a directory above its quota answers 507 with a text that starts
// with "repository quota exceeded", and stores nothing.
//
// GET /healthz answers 200 "ok" without authentication. Paths are
// refused (400) when they hold escapes, empty elements ("//"),
// "." or ".." elements, elements starting with ".", control characters, or
// a repository's own directory names (data, keys, ...) above a file.
func NewMultiServer(opts MultiOptions) (http.Handler, error) {
	if opts.MaxBodySize <= 0 {
		opts.MaxBodySize = DefaultMaxBodySize
	}
	if opts.MaxUploads <= 0 {
		opts.MaxUploads = DefaultMaxUploads
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", opts.Root, err)
	}
	m := &multiServer{
		opts:    opts,
		root:    root,
		uploads: make(chan struct{}, opts.MaxUploads),
		quotas:  newQuotaBook(),
		repos:   make(map[string]*local.Local),
	}
	if opts.HtpasswdFile != "" {
		m.htpasswd, err = watchFile(opts.HtpasswdFile, LoadHtpasswd, opts.Logf)
		if err != nil {
			return nil, err
		}
	}
	if m.htpasswd != nil || len(opts.Users) > 0 {
		m.auth = newAuthCache()
	}
	if opts.PrivateRepos && m.auth == nil && opts.ProxyAuthHeader == "" {
		return nil, errors.New("private repositories need users (an htpasswd file)")
	}
	if opts.Metrics {
		m.metrics = newMetrics()
	}
	if opts.UsersConfig != "" {
		m.policy, err = watchFile(opts.UsersConfig, LoadPolicy, opts.Logf)
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *multiServer) users() map[string]string {
	if m.htpasswd != nil {
		return m.htpasswd.get()
	}
	return m.opts.Users
}

func (m *multiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if (m.metrics == nil && m.opts.AccessLog == nil) || r.URL.Path == "/healthz" {
		m.serve(w, r, &reqLabels{})
		return
	}
	start := time.Now()
	labels := &reqLabels{}
	cw := &countingWriter{ResponseWriter: w}
	body := &countingBody{ReadCloser: r.Body}
	if r.Body != nil {
		r.Body = body
	}
	m.serve(cw, r, labels)
	code := cw.code
	if code == 0 {
		code = http.StatusOK
	}
	method := r.Method
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete:
	default:
		method = "other"
	}
	d := time.Since(start)
	if m.metrics != nil && r.URL.Path != "/metrics" {
		m.metrics.observe(labels, method, code, body.n, cw.n, d)
	}
	if m.opts.AccessLog != nil {
		line, _ := json.Marshal(accessEntry{
			Time: start.UTC().Format(time.RFC3339Nano), Remote: r.RemoteAddr, User: labels.user,
			Repo: labels.repo, Method: r.Method, Path: r.URL.EscapedPath(), Status: code,
			BytesIn: body.n, BytesOut: cw.n, Seconds: d.Seconds(),
		})
		m.logMu.Lock()
		_, _ = m.opts.AccessLog.Write(append(line, '\n'))
		m.logMu.Unlock()
	}
}

// accessEntry is one line of the access log.
type accessEntry struct {
	Time     string  `json:"time"`
	Remote   string  `json:"remote"`
	User     string  `json:"user,omitempty"`
	Repo     string  `json:"repo,omitempty"`
	Method   string  `json:"method"`
	Path     string  `json:"path"`
	Status   int     `json:"status"`
	BytesIn  int64   `json:"bytes_in"`
	BytesOut int64   `json:"bytes_out"`
	Seconds  float64 `json:"seconds"`
}

// serve answers r; it fills in labels (for the metrics) as it learns them.
func (m *multiServer) serve(w http.ResponseWriter, r *http.Request, labels *reqLabels) {
	if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		// For load balancers and monitoring: no authentication, no disk.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	metricsPath := m.metrics != nil && r.URL.Path == "/metrics"
	if metricsPath && m.opts.MetricsNoAuth {
		m.writeMetrics(w, r)
		return
	}
	user := ""
	if h := m.opts.ProxyAuthHeader; h != "" && r.Header.Get(h) != "" {
		user = r.Header.Get(h)
	} else if m.auth != nil || m.opts.ProxyAuthHeader != "" {
		var u string
		ok := false
		if m.auth != nil {
			u, ok = m.auth.check(m.users(), r)
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="dj"`)
			httpError(w, http.StatusUnauthorized)
			return
		}
		user = u
	}
	labels.user = user
	if metricsPath {
		if m.opts.PrivateRepos && user != "metrics" {
			httpError(w, http.StatusForbidden)
			return
		}
		m.writeMetrics(w, r)
		return
	}
	if r.URL.RawPath != "" && r.URL.RawPath != r.URL.Path {
		http.Error(w, "escaped characters in the path", http.StatusBadRequest)
		return
	}
	split, code := splitRepoPath(r.URL.Path)
	if code != 0 {
		httpError(w, code)
		return
	}
	if m.opts.PrivateRepos {
		first, _, _ := strings.Cut(split.repo, "/")
		if first != user {
			httpError(w, http.StatusForbidden)
			return
		}
	}
	dir := filepath.Join(m.root, filepath.FromSlash(split.repo))
	creating := split.rest == "/"
	if creating && r.Method == http.MethodPost {
		if inside := m.insideRepo(dir); inside != "" {
			http.Error(w, "a repository cannot be created inside the repository at /"+inside, http.StatusBadRequest)
			return
		}
	} else if fi, err := os.Stat(filepath.Join(dir, string(backend.KeyFile))); err != nil || !fi.IsDir() {
		// No repository here: one has the layout that init creates.
		httpError(w, http.StatusNotFound)
		return
	}

	labels.repo = "/" + split.repo
	if split.repo != "" {
		labels.repo += "/"
	}

	var pol Policy
	if m.policy != nil {
		pol = *m.policy.get()
	}
	userPol, repoPol := pol.Users[user], pol.Repos[split.repo]
	be := m.backend(dir)
	s := &server{be: be, opts: m.opts.ServerOptions, uploads: m.uploads}
	s.opts.AppendOnly = m.opts.AppendOnly || (user != "" && userPol.AppendOnly) || repoPol.AppendOnly
	s.opts.Init = be.Init
	s.opts.Users = nil
	var limits []quotaLimit
	if m.opts.MaxSize > 0 {
		limits = append(limits, quotaLimit{dir: m.root, max: m.opts.MaxSize, what: "global"})
	}
	if user != "" && userPol.MaxSize > 0 {
		limits = append(limits, quotaLimit{dir: filepath.Join(m.root, user), max: int64(userPol.MaxSize), what: fmt.Sprintf("user %q", user)})
	}
	if repoPol.MaxSize > 0 {
		limits = append(limits, quotaLimit{dir: dir, max: int64(repoPol.MaxSize), what: fmt.Sprintf("repository %q", "/"+split.repo)})
	}
	if len(limits) > 0 {
		s.quota = &quotaScope{book: m.quotas, repo: dir, limits: limits}
	} else {
		// Keep the measured figures right for when a limit comes.
		s.quota = &quotaScope{book: m.quotas, repo: dir}
	}
	s.route(w, r, split.rest)
}

func (m *multiServer) writeMetrics(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.metrics.write(w)
}

// backend returns the backend of the repository in dir, one per
// directory for the life of the server (it keeps pack files open).
func (m *multiServer) backend(dir string) *local.Local {
	m.mu.Lock()
	defer m.mu.Unlock()
	be, ok := m.repos[dir]
	if !ok {
		be = local.New(dir)
		if m.opts.GroupAccessible {
			be.ShareWithGroup()
		}
		m.repos[dir] = be
	}
	return be
}

// insideRepo returns the path (under the root, without slashes) of a
// repository that holds dir, or "" when there is none.
func (m *multiServer) insideRepo(dir string) string {
	for d := filepath.Dir(dir); within(d, m.root); d = filepath.Dir(d) {
		if _, err := os.Lstat(filepath.Join(d, "config")); err == nil || !errors.Is(err, fs.ErrNotExist) {
			rel, _ := filepath.Rel(m.root, d)
			if rel == "." {
				rel = ""
			}
			return filepath.ToSlash(rel)
		}
		if d == m.root {
			break
		}
	}
	return ""
}

// repoPath is a request path split into a repository and the path inside
// it.
type repoPath struct {
	repo string // "" (the root) or "ann/laptop": no slash at either end
	rest string // "/", "/config", "/{type}/" or "/{type}/{name}"
}

// splitRepoPath splits a request path into its repository and the path
// within it, the way rest-server reads them: "/config", "/{type}/" and
// "/{type}/{name}" at the end belong to the repository's protocol, a path
// ending in "/" otherwise names a repository. code is not 0 for paths to
// refuse: 400 for tricks, 404 for paths no repository could answer.
func splitRepoPath(p string) (repoPath, int) {
	if !strings.HasPrefix(p, "/") {
		return repoPath{}, http.StatusBadRequest
	}
	elems := strings.Split(p[1:], "/")
	last := len(elems) - 1
	for i, e := range elems {
		if e == "" && i != last {
			return repoPath{}, http.StatusBadRequest // "//"
		}
		if e != "" && !validElem(e) {
			return repoPath{}, http.StatusBadRequest
		}
	}
	var rest []string
	switch {
	case elems[last] == "config":
		rest = elems[last:]
	case last >= 1 && isFileType(elems[last-1]):
		rest = elems[last-1:]
	case elems[last] == "":
		rest = elems[last:]
	default:
		return repoPath{}, http.StatusNotFound
	}
	repo := elems[:len(elems)-len(rest)]
	for _, e := range repo {
		if e == "config" || isFileType(e) {
			// A repository's own directory: no repository lives there.
			return repoPath{}, http.StatusNotFound
		}
	}
	return repoPath{repo: strings.Join(repo, "/"), rest: "/" + strings.Join(rest, "/")}, 0
}

// validElem reports whether e may be an element of a repository's path:
// no leading dot (no "." or "..", no hidden or temporary files), no
// control characters or backslashes.
func validElem(e string) bool {
	if strings.HasPrefix(e, ".") {
		return false
	}
	for _, c := range e {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

func isFileType(s string) bool {
	switch backend.FileType(s) {
	case backend.KeyFile, backend.PackFile, backend.IndexFile, backend.SnapshotFile, backend.LockFile:
		return true
	}
	return false
}
