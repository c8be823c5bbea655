package rest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"dj/backend"
)

// DefaultMaxBodySize bounds an upload when ServerOptions.MaxBodySize is 0.
// Packs are 16 MiB by default; this leaves room for much larger ones.
const DefaultMaxBodySize = 256 << 20

// DefaultMaxUploads bounds the uploads held in memory at once when
// ServerOptions.MaxUploads is 0.
const DefaultMaxUploads = 16

// The media types of restic's REST protocol for listings.
const (
	mimeV1 = "application/vnd.x.restic.rest.v1"
	mimeV2 = "application/vnd.x.restic.rest.v2"
)

// ServerOptions configures NewServer.
type ServerOptions struct {
	// AppendOnly refuses to delete or replace anything but lock files:
	// DELETE answers 403 except under locks/, and POST of an existing
	// config answers 403. A POST of a file that exists (a retried upload)
	// answers 200 and leaves the stored file untouched.
	AppendOnly bool
	// Users maps user names to passwords for HTTP basic authentication.
	// A password is plain text, a bcrypt hash ("$2a$", "$2b$", "$2y$") or
	// "{SHA}" with a base64 SHA-1, as in an htpasswd file (see
	// ReadHtpasswd). Nil or empty: no authentication.
	Users map[string]string
	// MaxBodySize bounds the size of an upload (413 above it); 0 means
	// DefaultMaxBodySize.
	MaxBodySize int64
	// MaxUploads bounds concurrent uploads, each held in memory whole; 0
	// means DefaultMaxUploads.
	MaxUploads int
	// UploadIdleTimeout ends an upload whose body does not move for that
	// long (a client whose network went silent), so that it gives its
	// upload slot back; 0 means backend.DefaultStallTimeout.
	UploadIdleTimeout time.Duration
	// Init lays out a new repository when a client sends
	// POST /?create=true (for a local backend, (*local.Local).Init). Nil:
	// the request just succeeds, for backends that need no layout.
	Init func(ctx context.Context) error
	// Logf reports server-side failures (500 answers); nil means
	// log.Printf.
	Logf func(format string, args ...any)
}

// server is the http.Handler returned by NewServer.
type server struct {
	be      backend.Backend
	opts    ServerOptions
	uploads chan struct{}
	auth    *authCache
	// quota, when not nil, accounts for every upload and deletion and
	// refuses uploads that would cross a limit (NewMultiServer).
	quota *quotaScope
}

// NewServer returns an http.Handler that serves the repository in b over
// restic's REST protocol (version 1 and 2 listings), at the root of its
// URL space; mount it elsewhere with http.StripPrefix.
//
// Every upload except the config must hash (SHA-256) to its file name,
// or it is refused with 400 and nothing is stored. A full disk answers
// 507. Listing entries carry, besides restic's "name" and "size", the
// modification time as "mtime" (RFC 3339); HEAD and GET send
// Last-Modified.
func NewServer(b backend.Backend, opts ServerOptions) http.Handler {
	if opts.MaxBodySize <= 0 {
		opts.MaxBodySize = DefaultMaxBodySize
	}
	if opts.MaxUploads <= 0 {
		opts.MaxUploads = DefaultMaxUploads
	}
	if opts.UploadIdleTimeout <= 0 {
		opts.UploadIdleTimeout = backend.DefaultStallTimeout
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	s := &server{be: b, opts: opts, uploads: make(chan struct{}, opts.MaxUploads)}
	if len(opts.Users) > 0 {
		s.auth = newAuthCache()
	}
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.auth != nil && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="dj"`)
		httpError(w, http.StatusUnauthorized)
		return
	}
	// Escaped slashes or dots could make a name out of several path
	// elements; the protocol never needs escapes.
	if r.URL.RawPath != "" && r.URL.RawPath != r.URL.Path {
		httpError(w, http.StatusBadRequest)
		return
	}
	s.route(w, r, r.URL.Path)
}

// route serves the request r for the path p inside the repository ("/",
// "/config", "/{type}/", "/{type}/{name}").
func (s *server) route(w http.ResponseWriter, r *http.Request, p string) {
	switch {
	case p == "/":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		s.create(w, r)
	case p == "/config":
		s.file(w, r, backend.Handle{Type: backend.ConfigFile})
	default:
		typ, name, ok := parsePath(p)
		if !ok {
			httpError(w, http.StatusNotFound)
			return
		}
		if name != "" && !isID(name) {
			http.Error(w, "invalid file name: want 64 lowercase hex digits", http.StatusBadRequest)
			return
		}
		if name == "" {
			if r.Method != http.MethodGet {
				methodNotAllowed(w, "GET")
				return
			}
			s.list(w, r, typ)
			return
		}
		s.file(w, r, backend.Handle{Type: typ, Name: name})
	}
}

// parsePath splits "/{type}/" and "/{type}/{name}", accepting only the
// types of a repository and names without a slash.
func parsePath(p string) (backend.FileType, string, bool) {
	rest, ok := strings.CutPrefix(p, "/")
	if !ok {
		return "", "", false
	}
	dir, name, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", false
	}
	typ := backend.FileType(dir)
	switch typ {
	case backend.KeyFile, backend.PackFile, backend.IndexFile, backend.SnapshotFile, backend.LockFile:
	default:
		return "", "", false
	}
	if strings.Contains(name, "/") {
		return "", "", false
	}
	return typ, name, true
}

// isID reports whether s is 64 lowercase hex digits.
func isID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (s *server) create(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("create") != "true" {
		httpError(w, http.StatusBadRequest)
		return
	}
	if s.opts.Init != nil {
		if err := s.opts.Init(r.Context()); err != nil {
			s.fail(w, r, "create repository", err)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (s *server) file(w http.ResponseWriter, r *http.Request, h backend.Handle) {
	switch r.Method {
	case http.MethodHead:
		s.head(w, r, h)
	case http.MethodGet:
		s.get(w, r, h)
	case http.MethodPost:
		s.save(w, r, h)
	case http.MethodDelete:
		s.remove(w, r, h)
	default:
		methodNotAllowed(w, "HEAD, GET, POST, DELETE")
	}
}

func (s *server) head(w http.ResponseWriter, r *http.Request, h backend.Handle) {
	fi, err := s.be.Stat(r.Context(), h)
	if err != nil {
		s.fail(w, r, "stat "+h.String(), err)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	setLastModified(w, fi.ModTime)
	w.WriteHeader(http.StatusOK)
}

func (s *server) get(w http.ResponseWriter, r *http.Request, h backend.Handle) {
	ctx := r.Context()
	fi, err := s.be.Stat(ctx, h)
	if err != nil {
		s.fail(w, r, "stat "+h.String(), err)
		return
	}
	start, end, partial, ok := parseRange(r.Header.Get("Range"), fi.Size)
	if !ok {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", fi.Size))
		httpError(w, http.StatusRequestedRangeNotSatisfiable)
		return
	}
	var data []byte
	if end > start {
		data, err = s.be.Load(ctx, h, start, int(end-start))
		if err != nil {
			s.fail(w, r, "load "+h.String(), err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	setLastModified(w, fi.ModTime)
	if partial {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, fi.Size))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	_, _ = w.Write(data)
}

// parseRange interprets a Range header for a file of size bytes and
// returns the half-open byte range [start, end) to send. partial is false
// when the whole file goes out with 200: no header, or one this server
// ignores (several ranges, a unit other than bytes, bad syntax), as RFC
// 9110 allows. ok is false for a range that starts at or after the end
// (416).
func parseRange(header string, size int64) (start, end int64, partial, ok bool) {
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, size, false, true
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, size, false, true
	}
	if first == "" { // suffix: the last N bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return 0, size, false, true
		}
		if n == 0 {
			return 0, 0, false, false
		}
		return max(size-n, 0), size, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return 0, size, false, true
	}
	b := size - 1
	if last != "" {
		b, err = strconv.ParseInt(last, 10, 64)
		if err != nil || b < a {
			return 0, size, false, true
		}
	}
	if a >= size {
		return 0, 0, false, false
	}
	return a, min(b+1, size), true, true
}

func (s *server) save(w http.ResponseWriter, r *http.Request, h backend.Handle) {
	ctx := r.Context()
	r.Body = watchBody(w, r.Body, s.opts.UploadIdleTimeout)
	if s.opts.AppendOnly {
		_, err := s.be.Stat(ctx, h)
		switch {
		case err == nil && h.Type == backend.ConfigFile:
			httpError(w, http.StatusForbidden)
			return
		case err == nil:
			// The stored file is what the name promises (it was verified
			// on upload); keep it and let a retried upload, one with the
			// same content, succeed.
			sum := sha256.New()
			_, err := io.Copy(sum, http.MaxBytesReader(w, r.Body, s.opts.MaxBodySize))
			if err != nil || hex.EncodeToString(sum.Sum(nil)) != h.Name {
				httpError(w, http.StatusForbidden)
				return
			}
			w.WriteHeader(http.StatusOK)
			return
		case !errors.Is(err, fs.ErrNotExist):
			s.fail(w, r, "stat "+h.String(), err)
			return
		}
	}
	if r.ContentLength > s.opts.MaxBodySize {
		httpError(w, http.StatusRequestEntityTooLarge)
		return
	}
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	case <-ctx.Done():
		return
	}
	if st, ok := backend.As[backend.Stager](s.be); ok && h.Type != backend.ConfigFile {
		s.saveStreamed(w, r, h, st)
		return
	}
	data, err := readUpload(w, r, s.opts.MaxBodySize)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			httpError(w, http.StatusRequestEntityTooLarge)
			return
		}
		// The client went away or sent a broken body: store nothing.
		httpError(w, http.StatusBadRequest)
		return
	}
	if h.Type != backend.ConfigFile {
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != h.Name {
			http.Error(w, "file content does not match its name (SHA-256)", http.StatusBadRequest)
			return
		}
	}
	if s.quota != nil {
		delta := int64(len(data))
		if fi, err := s.be.Stat(ctx, h); err == nil {
			delta -= fi.Size // the file replaces one of that size
		}
		if err := s.quota.reserve(delta); err != nil {
			http.Error(w, err.Error(), http.StatusInsufficientStorage)
			return
		}
		if err := s.be.Save(ctx, h, data); err != nil {
			s.quota.add(-delta)
			s.fail(w, r, "save "+h.String(), err)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if err := s.be.Save(ctx, h, data); err != nil {
		s.fail(w, r, "save "+h.String(), err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// saveStreamed stores an upload on a backend with temporary files (the
// local disk): the body goes to a temporary file as it arrives, hashed on
// the way, and is published only when it matches its name and fits the
// quota. The server then holds a buffer per upload, not the upload: 32
// clients sending 16 MiB packs through buffered uploads held 245 MiB.
func (s *server) saveStreamed(w http.ResponseWriter, r *http.Request, h backend.Handle, st backend.Stager) {
	ctx := r.Context()
	f, err := st.CreateTemp(ctx, h.Type)
	if err != nil {
		s.fail(w, r, "save "+h.String(), err)
		return
	}
	published := false
	defer func() {
		if !published {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, sum), http.MaxBytesReader(w, r.Body, s.opts.MaxBodySize))
	if err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			httpError(w, http.StatusRequestEntityTooLarge)
		case errors.Is(err, syscall.ENOSPC):
			s.fail(w, r, "save "+h.String(), err)
		default: // the client went away or sent a broken body: store nothing
			httpError(w, http.StatusBadRequest)
		}
		return
	}
	if hex.EncodeToString(sum.Sum(nil)) != h.Name {
		http.Error(w, "file content does not match its name (SHA-256)", http.StatusBadRequest)
		return
	}
	var delta int64
	if s.quota != nil {
		delta = n
		if fi, err := s.be.Stat(ctx, h); err == nil {
			delta -= fi.Size // the file replaces one of that size
		}
		if err := s.quota.reserve(delta); err != nil {
			http.Error(w, err.Error(), http.StatusInsufficientStorage)
			return
		}
	}
	published = true // SaveTemp closes or removes f whatever happens
	if err := st.SaveTemp(ctx, h, f); err != nil {
		if s.quota != nil {
			s.quota.add(-delta)
		}
		s.fail(w, r, "save "+h.String(), err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// readUpload reads a request body of at most limit bytes, in one
// allocation when its length is announced.
func readUpload(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength >= 0 {
		// net/http never delivers more than the announced length, which
		// the caller checked against limit.
		data := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(body, data); err != nil {
			return nil, err
		}
		return data, nil
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(body); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (s *server) remove(w http.ResponseWriter, r *http.Request, h backend.Handle) {
	if s.opts.AppendOnly && h.Type != backend.LockFile {
		httpError(w, http.StatusForbidden)
		return
	}
	var size int64
	if s.quota != nil {
		if fi, err := s.be.Stat(r.Context(), h); err == nil {
			size = fi.Size
		}
	}
	if err := s.be.Remove(r.Context(), h); err != nil {
		s.fail(w, r, "remove "+h.String(), err)
		return
	}
	if size > 0 {
		s.quota.add(-size)
	}
	w.WriteHeader(http.StatusOK)
}

// listEntry is one file of a version 2 listing. MTime is dj's addition;
// restic's clients ignore it.
type listEntry struct {
	Name  string `json:"name"`
	Size  int64  `json:"size"`
	MTime string `json:"mtime,omitempty"`
}

func (s *server) list(w http.ResponseWriter, r *http.Request, t backend.FileType) {
	v2 := r.Header.Get("Accept") == mimeV2
	names := []string{}
	entries := []listEntry{}
	err := s.be.List(r.Context(), t, func(fi backend.FileInfo) error {
		if v2 {
			e := listEntry{Name: fi.Name, Size: fi.Size}
			if !fi.ModTime.IsZero() {
				e.MTime = fi.ModTime.UTC().Format(time.RFC3339Nano)
			}
			entries = append(entries, e)
		} else {
			names = append(names, fi.Name)
		}
		return nil
	})
	if err != nil {
		s.fail(w, r, "list "+string(t), err)
		return
	}
	var body []byte
	if v2 {
		w.Header().Set("Content-Type", mimeV2)
		body, err = json.Marshal(entries)
	} else {
		w.Header().Set("Content-Type", mimeV1)
		body, err = json.Marshal(names)
	}
	if err != nil {
		s.fail(w, r, "list "+string(t), err)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// fail answers a failed backend operation with the matching status.
func (s *server) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		httpError(w, http.StatusNotFound)
	case errors.Is(err, io.ErrUnexpectedEOF):
		httpError(w, http.StatusRequestedRangeNotSatisfiable)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		s.opts.Logf("dj serve: %s %s: %s: %v", r.Method, r.URL.Path, op, err)
		httpError(w, http.StatusInsufficientStorage)
	case r.Context().Err() != nil:
		// The client is gone; nobody reads the answer.
	default:
		s.opts.Logf("dj serve: %s %s: %s: %v", r.Method, r.URL.Path, op, err)
		httpError(w, http.StatusInternalServerError)
	}
}

func httpError(w http.ResponseWriter, code int) {
	http.Error(w, http.StatusText(code), code)
}

func methodNotAllowed(w http.ResponseWriter, allowed string) {
	w.Header().Set("Allow", allowed)
	httpError(w, http.StatusMethodNotAllowed)
}

func setLastModified(w http.ResponseWriter, t time.Time) {
	if !t.IsZero() {
		w.Header().Set("Last-Modified", t.UTC().Format(http.TimeFormat))
	}
}
