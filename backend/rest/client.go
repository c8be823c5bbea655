// Package rest speaks restic's REST backend protocol, unchanged, in both
// directions: Client is a backend.Backend over HTTP, and NewServer serves
// any backend.Backend (normally a local directory) to such clients, dj's
// and restic's alike.
//
// The protocol (https://restic.readthedocs.io/en/stable/100_references.html#rest-backend):
//
//	POST   /?create=true          lay out a new repository
//	HEAD   /config                size of the config file (404: none)
//	GET    /config                the config file
//	POST   /config                save the config file
//	DELETE /config                remove it
//	GET    /{type}/               list files; with "Accept: application/vnd.x.restic.rest.v2"
//	                              as [{"name": ..., "size": ...}], else as ["name", ...]
//	HEAD   /{type}/{name}         size of a file
//	GET    /{type}/{name}         the file, or a range of it with "Range: bytes=first-last"
//	POST   /{type}/{name}         save a file
//	DELETE /{type}/{name}         remove a file
//
// where type is keys, data, index, snapshots or locks.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"dj/backend"
)

const (
	// maxFileSize bounds what Load accepts from a server for one file.
	maxFileSize = 4 << 30
	// maxListing bounds the size of a listing response.
	maxListing = 512 << 20
	// responseHeaderTimeout is how long the default client waits for a
	// server to answer a request it has sent completely.
	responseHeaderTimeout = 5 * time.Minute
)

// Client is a backend.Backend that talks to a REST server. Its methods are
// safe for concurrent use.
type Client struct {
	base     *url.URL // without user info; Path ends in "/"
	user     *url.Userinfo
	hc       *http.Client
	ownHC    bool
	location string
	// stall is the stall time-out the client was opened with (the
	// context of Open may shorten it; a request's context may too).
	stall time.Duration
}

var (
	_ backend.Backend     = (*Client)(nil)
	_ backend.RangeLoader = (*Client)(nil)
)

// Open connects to the repository at rawURL (http or https, optionally
// with user:password@ for basic authentication). It checks that the
// repository has a config file; if not, the error says "no repository at
// rest:URL" and satisfies errors.Is(err, fs.ErrNotExist). hc nil means a
// client tuned for many parallel requests.
func Open(ctx context.Context, rawURL string, hc *http.Client) (*Client, error) {
	c, err := newClient(ctx, rawURL, hc)
	if err != nil {
		return nil, err
	}
	if _, err := c.Stat(ctx, backend.Handle{Type: backend.ConfigFile}); err != nil {
		c.Close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no repository at %s: %w", c.location, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("open repository at %s: %w", c.location, err)
	}
	return c, nil
}

// Create asks the server at rawURL to lay out a new repository
// (POST /?create=true) and returns a client for it. It refuses, with an
// error satisfying errors.Is(err, fs.ErrExist), when a config file is
// already there. The config file itself is saved by the repository layer.
func Create(ctx context.Context, rawURL string, hc *http.Client) (*Client, error) {
	c, err := newClient(ctx, rawURL, hc)
	if err != nil {
		return nil, err
	}
	_, err = c.Stat(ctx, backend.Handle{Type: backend.ConfigFile})
	switch {
	case err == nil:
		c.Close()
		return nil, fmt.Errorf("create repository at %s: config file already exists: %w", c.location, fs.ErrExist)
	case !errors.Is(err, fs.ErrNotExist):
		c.Close()
		return nil, fmt.Errorf("create repository at %s: %w", c.location, err)
	}
	u := *c.base
	u.RawQuery = "create=true"
	resp, err := c.do(ctx, http.MethodPost, &u, nil, nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("create repository at %s: %w", c.location, err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("create repository at %s: %w", c.location, fail(resp, backend.Handle{}))
	}
	discard(resp)
	return c, nil
}

func newClient(ctx context.Context, rawURL string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("invalid REST URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("invalid REST URL %q: scheme must be http or https", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("invalid REST URL %q: no host", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid REST URL %q: no query or fragment allowed", u.Redacted())
	}
	c := &Client{user: u.User, hc: hc, stall: backend.StallTimeout(ctx, backend.DefaultStallTimeout)}
	base := *u
	base.User = nil
	base.RawPath = ""
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	c.base = &base
	shown := base
	if c.user != nil {
		shown.User = url.User(c.user.Username()) // never show the password
	}
	c.location = "rest:" + shown.String()
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		t.ResponseHeaderTimeout = backend.StallTimeout(ctx, responseHeaderTimeout)
		c.hc = &http.Client{Transport: t}
		c.ownHC = true
	}
	return c, nil
}

// Location returns "rest:" and the URL, without the password.
func (c *Client) Location() string { return c.location }

// Close releases idle connections of the client's own HTTP client.
func (c *Client) Close() error {
	if c.ownHC {
		c.hc.CloseIdleConnections()
	}
	return nil
}

// do sends one request with the client's credentials.
func (c *Client) do(ctx context.Context, method string, u *url.URL, body []byte, header http.Header) (resp *http.Response, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var req *http.Request
	if len(body) > 0 {
		// An upload is watched: a peer that stops reading ends it.
		w := backend.WatchUpload(ctx, body, backend.StallTimeout(ctx, c.stall))
		defer w.Stop()
		req, err = http.NewRequestWithContext(w.Context(), method, u.String(), w.Body())
		if err != nil {
			return nil, err
		}
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return w.Body(), nil }
		defer func() { err = w.Err(err) }()
	} else {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err = http.NewRequestWithContext(ctx, method, u.String(), rd)
		if err != nil {
			return nil, err
		}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	if c.user != nil {
		pw, _ := c.user.Password()
		req.SetBasicAuth(c.user.Username(), pw)
	}
	resp, err = c.hc.Do(req)
	if err != nil {
		if tlsErr := certificateError(err); tlsErr != nil {
			return nil, tlsErr
		}
		err = transportError(ctx, err)
		return nil, err
	}
	// Every body is read under the stall time-out, the start of an error
	// answer too: a server that stalls after its headers must not hang
	// the client.
	resp.Body = backend.GuardStall(resp.Body, backend.StallTimeout(ctx, c.stall))
	return resp, nil
}

// fileURL returns the URL of h after checking that h is well formed.
func (c *Client) fileURL(h backend.Handle) (*url.URL, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	u := *c.base
	if h.Type == backend.ConfigFile {
		u.Path += "config"
	} else {
		u.Path += string(h.Type) + "/" + h.Name
	}
	return &u, nil
}

// Save uploads data to h.
func (c *Client) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	return c.send(ctx, "save", http.MethodPost, h, data)
}

// send sends a request whose answer has no body to read (save, remove)
// and checks its status; op names the operation in errors.
func (c *Client) send(ctx context.Context, op, method string, h backend.Handle, body []byte) error {
	u, err := c.fileURL(h)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.do(ctx, method, u, body, nil)
	if err != nil {
		return fmt.Errorf("%s %v: %w", op, h, err)
	}
	if resp.StatusCode/100 != 2 {
		// Name the server: a refused save or removal is a message of its own.
		return fmt.Errorf("%s: %s %v: %w", c.location, op, h, fail(resp, h))
	}
	discard(resp)
	return nil
}

// Load downloads length bytes of h from offset on (to the end when length
// is 0) with one ranged GET.
func (c *Client) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	data, err := c.load(ctx, h, offset, length, nil)
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	return data, nil
}

// LoadRange reads a range into buf when it has room for it (see
// backend.RangeLoader): a read of many blobs reuses its buffers instead of
// making (and faulting in) a fresh one per request.
func (c *Client) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	if length == 0 {
		buf = nil
	}
	data, err := c.load(ctx, h, offset, length, buf)
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	return data, nil
}

// load reads a range of h; the body goes into buf when it has room.
func (c *Client) load(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	u, err := c.fileURL(h)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("invalid range offset %d length %d: %w", offset, length, fs.ErrInvalid)
	}
	header := http.Header{}
	switch {
	case length > 0:
		header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, offset+int64(length)-1))
	case offset > 0:
		header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := c.do(ctx, http.MethodGet, u, nil, header)
	if err != nil {
		return nil, err
	}
	defer discard(resp)
	limit := int64(maxFileSize)
	if length > 0 {
		limit = int64(length)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		// The whole file (a server that ignores Range): cut the range out.
		if length > 0 {
			limit = offset + int64(length)
		}
		data, err := readBody(ctx, resp, limit, buf)
		if err != nil {
			return nil, err
		}
		return cut(data, offset, length)
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		if size, ok := emptyRange(cr, offset); ok {
			// rclone's server answers a range at or past the end with an
			// empty 206 ("bytes SIZE-(SIZE-1)/SIZE") instead of 416.
			if length == 0 && offset == size {
				return []byte{}, nil
			}
			return nil, fmt.Errorf("range %d+%d beyond the end of the file: %w", offset, length, io.ErrUnexpectedEOF)
		}
		first, _, _, ok := parseContentRange(cr)
		if !ok || first != offset {
			return nil, fmt.Errorf("server sent range %q for a request from offset %d", resp.Header.Get("Content-Range"), offset)
		}
		data, err := readBody(ctx, resp, limit, buf)
		if err != nil {
			return nil, err
		}
		if length > 0 && len(data) < length {
			return nil, fmt.Errorf("range %d+%d beyond the end of the file: %w", offset, length, io.ErrUnexpectedEOF)
		}
		return data, nil
	case http.StatusRequestedRangeNotSatisfiable:
		// HTTP cannot ask for an empty range; "bytes=SIZE-" is refused.
		if _, _, size, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && length == 0 && offset == size {
			return []byte{}, nil
		}
		return nil, fmt.Errorf("range %d+%d beyond the end of the file: %w", offset, length, io.ErrUnexpectedEOF)
	default:
		return nil, fail(resp, h)
	}
}

// cut returns the range of a whole file.
func cut(data []byte, offset int64, length int) ([]byte, error) {
	size := int64(len(data))
	if offset > size || (length > 0 && int64(length) > size-offset) {
		return nil, fmt.Errorf("range %d+%d beyond size %d: %w", offset, length, size, io.ErrUnexpectedEOF)
	}
	if length == 0 {
		return data[offset:], nil
	}
	return data[offset : offset+int64(length)], nil
}

// emptyRange reports whether a Content-Range is an empty range "bytes
// F-L/SIZE" with L < F and F = offset, and returns SIZE.
func emptyRange(s string, offset int64) (size int64, ok bool) {
	var first, last int64
	if n, err := fmt.Sscanf(s, "bytes %d-%d/%d", &first, &last, &size); n != 3 || err != nil {
		return 0, false
	}
	return size, first == offset && last < first && size >= 0
}

// parseContentRange parses "bytes FIRST-LAST/SIZE" and "bytes */SIZE"
// (then first and last are -1). size is -1 for an unknown size ("/*").
func parseContentRange(s string) (first, last, size int64, ok bool) {
	spec, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, sz, found := strings.Cut(spec, "/")
	if !found {
		return 0, 0, 0, false
	}
	size = -1
	if sz != "*" {
		n, err := strconv.ParseInt(sz, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, 0, false
		}
		size = n
	}
	if rng == "*" {
		return -1, -1, size, size >= 0
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, 0, false
	}
	return first, last, size, true
}

// readBody reads a response body of at most limit bytes: into buf when its
// announced length fits buf's capacity, otherwise into a buffer made by
// the announced length (only within the bound).
func readBody(ctx context.Context, resp *http.Response, limit int64, buf []byte) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("server sent %d bytes, more than the %d asked for", resp.ContentLength, limit)
	}
	body := resp.Body // guarded against stalls by do
	if resp.ContentLength >= 0 {
		// net/http never delivers more than the announced length.
		if int64(cap(buf)) >= resp.ContentLength {
			buf = buf[:resp.ContentLength]
		} else {
			buf = make([]byte, resp.ContentLength)
		}
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, transportError(ctx, err)
		}
		return buf, nil
	}
	var grown bytes.Buffer
	n, err := grown.ReadFrom(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, transportError(ctx, err)
	}
	if n > limit {
		return nil, fmt.Errorf("server sent more than the %d bytes asked for", limit)
	}
	return grown.Bytes(), nil
}

// Stat returns the size of h and its modification time from the
// Last-Modified header. When the server sends none (restic's rest-server),
// ModTime is the time of the call, so that age-based safety margins err on
// the side of keeping files.
func (c *Client) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	u, err := c.fileURL(h)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat: %w", err)
	}
	resp, err := c.do(ctx, http.MethodHead, u, nil, nil)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	defer discard(resp)
	if resp.StatusCode != http.StatusOK {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, &StatusError{Handle: h, Code: resp.StatusCode})
	}
	if resp.ContentLength < 0 {
		return backend.FileInfo{}, fmt.Errorf("stat %v: server sent no Content-Length", h)
	}
	return backend.FileInfo{Name: h.Name, Size: resp.ContentLength, ModTime: lastModified(resp)}, nil
}

func lastModified(resp *http.Response) time.Time {
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		return t
	}
	return time.Now()
}

// Remove deletes h.
func (c *Client) Remove(ctx context.Context, h backend.Handle) error {
	return c.send(ctx, "remove", http.MethodDelete, h, nil)
}

// List calls fn for every file of type t, from one version 2 listing
// (falling back to a version 1 listing and a HEAD per file for servers
// that only speak version 1). Entries without a modification time get the
// time of the call, as in Stat; entries with invalid names are skipped.
func (c *Client) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := c.list(ctx, t, fn); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	return nil
}

func (c *Client) list(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if !t.Valid() {
		return fmt.Errorf("invalid file type %q: %w", t, fs.ErrInvalid)
	}
	if t == backend.ConfigFile {
		fi, err := c.Stat(ctx, backend.Handle{Type: t})
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(fi)
	}
	u := *c.base
	u.Path += string(t) + "/"
	resp, err := c.do(ctx, http.MethodGet, &u, nil, http.Header{"Accept": {mimeV2}})
	if err != nil {
		return err
	}
	defer discard(resp)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil // rest-server answers 404 for a missing type directory
	case resp.StatusCode != http.StatusOK:
		return fail(resp, backend.Handle{Type: t})
	}
	now := time.Now()
	body, err := readBody(ctx, resp, maxListing, nil)
	if err != nil {
		return err
	}
	var infos []backend.FileInfo
	if resp.Header.Get("Content-Type") == mimeV2 {
		var entries []listEntry
		if err := json.Unmarshal(body, &entries); err != nil {
			return fmt.Errorf("invalid listing from server: %w", err)
		}
		for _, e := range entries {
			if (backend.Handle{Type: t, Name: e.Name}).Validate() != nil || e.Size < 0 {
				continue
			}
			mt := now
			if e.MTime != "" {
				if parsed, err := time.Parse(time.RFC3339Nano, e.MTime); err == nil {
					mt = parsed
				}
			}
			infos = append(infos, backend.FileInfo{Name: e.Name, Size: e.Size, ModTime: mt})
		}
	} else {
		var names []string
		if err := json.Unmarshal(body, &names); err != nil {
			return fmt.Errorf("invalid listing from server: %w", err)
		}
		for _, name := range names {
			h := backend.Handle{Type: t, Name: name}
			if h.Validate() != nil {
				continue
			}
			fi, err := c.Stat(ctx, h)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since the listing
			}
			if err != nil {
				return err
			}
			infos = append(infos, fi)
		}
	}
	return backend.ListInfos(ctx, infos, fn)
}
