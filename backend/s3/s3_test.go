package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/retry"
	"dj/backend/s3"
	"dj/internal/testserver"
)

// server starts one S3 server for the test and sets the AWS environment
// of the process to its credentials.
func server(t *testing.T) *testserver.S3Server {
	t.Helper()
	if testing.Short() {
		t.Skip("starts an S3 server (versitygw, built once from the Go module proxy)")
	}
	srv := testserver.StartS3Server(t)
	srv.SetEnv(t)
	return srv
}

var bucketSeq atomic.Int64

// newBucket returns the config of a location in a new bucket of srv.
func newBucket(t *testing.T, endpoint string, opts map[string]string) s3.Config {
	t.Helper()
	name := fmt.Sprintf("dj-test-%d-%d", time.Now().UnixNano()%1e9, bucketSeq.Add(1))
	cfg, err := s3.ParseLocation("s3:"+endpoint+"/"+name+"/repo", opts)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func create(t *testing.T, cfg s3.Config) *s3.Backend {
	t.Helper()
	be, err := s3.Create(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return be
}

func TestConformance(t *testing.T) {
	srv := server(t)
	conformance.Run(t, func(t *testing.T) backend.Backend {
		// A small part size, so that the large files go in parts.
		return create(t, newBucket(t, srv.URL, map[string]string{"s3.part-size": "5"}))
	})
}

// TestConformancePrefixed runs the suite in a location under a prefix of
// a bucket that holds other keys, with a path inside a prefix.
func TestConformancePrefixed(t *testing.T) {
	srv := server(t)
	cfg := newBucket(t, srv.URL, nil)
	be := create(t, cfg)
	defer be.Close()
	// A neighbour with a similar prefix must never show up.
	other := cfg
	other.Prefix = "repo-other"
	obe := create(t, other)
	defer obe.Close()
	if err := obe.Save(context.Background(), backend.Handle{Type: backend.SnapshotFile, Name: strings.Repeat("ab", 32)}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	n := 0
	conformance.Run(t, func(t *testing.T) backend.Backend {
		n++
		c := cfg
		c.Prefix = fmt.Sprintf("repo/sub%d", n)
		return create(t, c)
	})
}

func TestOpenCreate(t *testing.T) {
	srv := server(t)
	ctx := context.Background()
	cfg := newBucket(t, srv.URL, nil)
	// The bucket does not exist yet.
	if _, err := s3.Open(ctx, cfg); !errors.Is(err, s3.ErrNoBucket) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open of a missing bucket: %v, want ErrNoBucket", err)
	}
	be := create(t, cfg) // creates the bucket
	if _, err := s3.Open(ctx, cfg); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no repository at "+cfg.Location()) {
		t.Errorf("Open without config: %v", err)
	}
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("cfg")); err != nil {
		t.Fatal(err)
	}
	be.Close()
	if _, err := s3.Create(ctx, cfg); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over a repository: %v, want fs.ErrExist", err)
	}
	be, err := s3.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer be.Close()
	if got := be.Location(); got != cfg.Location() || !strings.HasPrefix(got, "s3:http://127.0.0.1:") {
		t.Errorf("Location %q", got)
	}
	// A second repository in the same bucket, under another prefix.
	cfg2 := cfg
	cfg2.Prefix = "other"
	be2 := create(t, cfg2)
	be2.Close()
}

// TestErrors: every failure to reach a repository is one line that names
// the location and what to do, and a distinct error.
func TestErrors(t *testing.T) {
	srv := server(t)
	ctx := context.Background()
	cfg := newBucket(t, srv.URL, nil)
	create(t, cfg).Close()

	tests := []struct {
		name string
		env  map[string]string
		cfg  func(s3.Config) s3.Config
		want error
		text string
	}{
		{"wrong secret", map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong"}, nil, fs.ErrPermission, "access denied"},
		{"unknown key", map[string]string{"AWS_ACCESS_KEY_ID": "nobody"}, nil, fs.ErrPermission, "access denied"},
		{"no credentials", map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, nil, s3.ErrNoCredentials, "AWS_ACCESS_KEY_ID"},
		{"missing bucket", nil, func(c s3.Config) s3.Config { c.Bucket = "dj-no-such-bucket"; return c }, s3.ErrNoBucket, "dj init creates it"},
		{"unreachable", nil, func(c s3.Config) s3.Config {
			c.Endpoint = testserver.FreeAddr(t) // nobody listens there
			return c
		}, s3.ErrUnreachable, "cannot reach"},
		{"unknown profile", map[string]string{"AWS_PROFILE": "no-such-profile"}, nil, nil, "AWS configuration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
				if v == "" {
					os.Unsetenv(k)
				}
			}
			c := cfg
			if tc.cfg != nil {
				c = tc.cfg(c)
			}
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			_, err := s3.Open(ctx, c)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %q is not %v", msg, tc.want)
			}
			if !strings.Contains(msg, tc.text) || !strings.Contains(msg, c.Location()) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %s and saying %q", msg, c.Location(), tc.text)
			}
			if strings.Contains(msg, "wrong") && tc.name == "wrong secret" {
				t.Errorf("error %q shows the secret", msg)
			}
		})
	}

	// A denied request is permanent for the retry layer; throttling is not.
	e := &s3.Error{Status: 403, Code: "AccessDenied"}
	if !retry.Permanent(e) || !errors.Is(e, fs.ErrPermission) {
		t.Errorf("AccessDenied: permanent %v, permission %v", retry.Permanent(e), errors.Is(e, fs.ErrPermission))
	}
	if e := (&s3.Error{Status: 503, Code: "SlowDown"}); retry.Permanent(e) {
		t.Errorf("SlowDown is permanent")
	}
}

// TestRangeLoader: LoadRange reads into the caller's buffer; LoadInto
// fills it exactly.
func TestRangeLoader(t *testing.T) {
	srv := server(t)
	ctx := context.Background()
	be := create(t, newBucket(t, srv.URL, nil))
	defer be.Close()
	data := random(t, 100000)
	h := handleOf(backend.PackFile, data)
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	rl, ok := backend.As[backend.RangeLoader](retry.New(be, retry.Options{}))
	if !ok {
		t.Fatal("no RangeLoader through the retry decorator")
	}
	buf := make([]byte, 5000+backend.RangeSlack)
	got, err := rl.LoadRange(ctx, h, 1234, 5000, buf)
	if err != nil || !bytes.Equal(got, data[1234:6234]) {
		t.Fatalf("LoadRange: %d bytes, %v", len(got), err)
	}
	if &got[0] != &buf[0] {
		t.Errorf("LoadRange did not read into the caller's buffer")
	}
	small := make([]byte, 10)
	if got, err := rl.LoadRange(ctx, h, 99000, 1000, small); err != nil || !bytes.Equal(got, data[99000:]) {
		t.Errorf("LoadRange into a small buffer: %d bytes, %v", len(got), err)
	}
	if _, err := rl.LoadRange(ctx, h, 99990, 20, buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("LoadRange past the end: %v", err)
	}
	into := make([]byte, 777)
	if err := be.LoadInto(ctx, h, 50000, into); err != nil || !bytes.Equal(into, data[50000:50777]) {
		t.Errorf("LoadInto: %v", err)
	}
	if err := be.LoadInto(ctx, h, 99999, into); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("LoadInto past the end: %v", err)
	}
}

// recorder is a reverse proxy in front of the server that records the
// requests: what the backend sends, seen on the wire.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
	srv  *httptest.Server
	// onRequest, when set, sees every request before it is forwarded.
	onRequest func(*http.Request)
	// serve, when set, answers the request in place of the proxy, which
	// it is given.
	serve func(w http.ResponseWriter, req *http.Request, proxy http.Handler)
}

type recorded struct {
	method, path, query string
	header              http.Header
}

func newRecorder(t *testing.T, target string) *recorder {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // canceled requests are expected
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, recorded{req.Method, req.URL.Path, req.URL.RawQuery, req.Header.Clone()})
		hook, serve := r.onRequest, r.serve
		r.mu.Unlock()
		if hook != nil {
			hook(req)
		}
		if serve != nil {
			serve(w, req, proxy)
			return
		}
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// puts returns the uploads (PUT of an object or a part, POST starting a
// multipart upload) of keys ending in suffix.
func (r *recorder) puts(suffix string) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, q := range r.reqs {
		if strings.HasSuffix(q.path, suffix) && (q.method == http.MethodPut || q.method == http.MethodPost && strings.Contains(q.query, "uploads")) {
			out = append(out, q)
		}
	}
	return out
}

// TestStorageClass: data packs go to the configured storage class; tree
// packs, packs of unknown kind and every other file stay STANDARD. The
// server (versitygw on posix) keeps no storage class, so the test reads
// the header of the uploads on the wire, and HeadObject where the server
// reports a class other than STANDARD.
func TestStorageClass(t *testing.T) {
	srv := server(t)
	rec := newRecorder(t, srv.URL)
	ctx := context.Background()
	be := create(t, newBucket(t, rec.srv.URL, map[string]string{"s3.storage-class": "standard_ia", "s3.part-size": "5"}))
	defer be.Close()
	dataPack := random(t, 1000)
	bigDataPack := random(t, 6<<20) // multipart
	treePack := random(t, 1000)
	unknownPack := random(t, 1000)
	index := random(t, 100)
	files := []struct {
		name string
		ctx  context.Context
		h    backend.Handle
		data []byte
		want string
	}{
		{"data pack", backend.WithPackKind(ctx, backend.DataPack), handleOf(backend.PackFile, dataPack), dataPack, "STANDARD_IA"},
		{"big data pack", backend.WithPackKind(ctx, backend.DataPack), handleOf(backend.PackFile, bigDataPack), bigDataPack, "STANDARD_IA"},
		{"tree pack", backend.WithPackKind(ctx, backend.TreePack), handleOf(backend.PackFile, treePack), treePack, "STANDARD"},
		{"unknown pack", ctx, handleOf(backend.PackFile, unknownPack), unknownPack, "STANDARD"},
		{"index marked data", backend.WithPackKind(ctx, backend.DataPack), handleOf(backend.IndexFile, index), index, "STANDARD"},
		{"config", ctx, backend.Handle{Type: backend.ConfigFile}, index, "STANDARD"},
	}
	for _, f := range files {
		if err := be.Save(f.ctx, f.h, f.data); err != nil {
			t.Fatalf("Save %s: %v", f.name, err)
		}
		suffix := "/" + f.h.Name
		if f.h.Type == backend.ConfigFile {
			suffix = "/config"
		}
		puts := rec.puts(suffix)
		if len(puts) == 0 {
			t.Fatalf("%s: no upload seen", f.name)
		}
		first := puts[0] // the PUT, or the POST that starts a multipart upload
		if got := first.header.Get("X-Amz-Storage-Class"); got != f.want {
			t.Errorf("%s: uploaded with storage class %q, want %q", f.name, got, f.want)
		}
		for _, q := range puts {
			for k := range q.header {
				if strings.HasPrefix(strings.ToLower(k), "x-amz-checksum-") || strings.EqualFold(k, "x-amz-sdk-checksum-algorithm") {
					t.Errorf("%s: the upload sends a checksum header %s, which breaks non-AWS servers", f.name, k)
				}
			}
		}
		// Where the server keeps the class, HeadObject shows it.
		head := headObject(t, srv, be, f.h)
		if sc := string(head.StorageClass); sc != "" && sc != "STANDARD" && sc != f.want {
			t.Errorf("%s: HeadObject says storage class %q, want %q", f.name, sc, f.want)
		}
	}
}

// headObject reads the object of h with a client of its own.
func headObject(t *testing.T, srv *testserver.S3Server, be *s3.Backend, h backend.Handle) *awss3.HeadObjectOutput {
	t.Helper()
	loc := strings.TrimPrefix(be.Location(), "s3:http://")
	_, rest, _ := strings.Cut(loc, "/")
	bucket, prefix, _ := strings.Cut(rest, "/")
	out, err := client(t, srv).HeadObject(context.Background(), &awss3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + "/" + h.String())})
	if err != nil {
		t.Fatalf("HeadObject %v: %v", h, err)
	}
	return out
}

// TestMultipart: a pack over the part size goes up in parts, is read back
// whole and by range, and leaves no upload behind.
func TestMultipart(t *testing.T) {
	srv := server(t)
	rec := newRecorder(t, srv.URL)
	ctx := context.Background()
	be := create(t, newBucket(t, rec.srv.URL, map[string]string{"s3.part-size": "5"}))
	defer be.Close()
	data := random(t, 12<<20+12345)
	h := handleOf(backend.PackFile, data)
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	parts := 0
	for _, q := range rec.puts("/" + h.Name) {
		if strings.Contains(q.query, "partNumber=") {
			parts++
		}
	}
	if parts != 3 {
		t.Errorf("a pack of %d bytes went up in %d parts, want 3 of 5 MiB", len(data), parts)
	}
	got, err := be.Load(ctx, h, 0, 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Load: %d bytes, %v", len(got), err)
	}
	off := int64(5<<20 - 100) // across the end of the first part
	if got, err := be.Load(ctx, h, off, 200); err != nil || !bytes.Equal(got, data[off:off+200]) {
		t.Errorf("Load across parts: %v", err)
	}
	fi, err := be.Stat(ctx, h)
	if err != nil || fi.Size != int64(len(data)) {
		t.Errorf("Stat: %+v, %v", fi, err)
	}
	// A pack of exactly the part size goes in one request.
	exact := random(t, 5<<20)
	he := handleOf(backend.PackFile, exact)
	if err := be.Save(ctx, he, exact); err != nil {
		t.Fatal(err)
	}
	for _, q := range rec.puts("/" + he.Name) {
		if q.method != http.MethodPut || strings.Contains(q.query, "upload") {
			t.Errorf("a pack of the part size: %s %s?%s, want one PUT", q.method, q.path, q.query)
		}
	}
}

// multipartUpload is the setting of the tests of canceled multipart
// uploads: a backend with 5 MiB parts reaching the server through a
// recorder, and 30 MiB to save (six parts).
type multipartUpload struct {
	srv  *testserver.S3Server
	rec  *recorder
	cfg  s3.Config
	be   *s3.Backend
	data []byte
	h    backend.Handle
}

func newMultipartUpload(t *testing.T) multipartUpload {
	srv := server(t)
	rec := newRecorder(t, srv.URL)
	cfg := newBucket(t, rec.srv.URL, map[string]string{"s3.part-size": "5"})
	be := create(t, cfg)
	t.Cleanup(func() { be.Close() })
	data := random(t, 30<<20)
	return multipartUpload{srv, rec, cfg, be, data, handleOf(backend.PackFile, data)}
}

// TestCanceledMultipart: a multipart upload whose context ends while its
// parts go up is aborted and leaves neither an object nor an upload.
func TestCanceledMultipart(t *testing.T) {
	u := newMultipartUpload(t)
	srv, rec, cfg, be, data, h := u.srv, u.rec, u.cfg, u.be, u.data, u.h
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec.mu.Lock()
	rec.onRequest = func(req *http.Request) {
		if strings.Contains(req.URL.RawQuery, "partNumber=2") {
			cancel()
		}
	}
	rec.mu.Unlock()
	if err := be.Save(ctx, h, data); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save canceled during its parts: %v", err)
	}
	if _, err := be.Stat(context.Background(), h); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat after a canceled multipart upload: %v, want fs.ErrNotExist", err)
	}
	aborted := false
	rec.mu.Lock()
	for _, q := range rec.reqs {
		aborted = aborted || q.method == http.MethodDelete && strings.Contains(q.query, "uploadId=")
	}
	rec.mu.Unlock()
	if !aborted {
		t.Errorf("the canceled multipart upload was not aborted")
	}
	c := client(t, srv)
	out, err := c.ListMultipartUploads(context.Background(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(cfg.Bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	if len(out.Uploads) != 0 {
		t.Errorf("%d multipart uploads left behind", len(out.Uploads))
	}
}

// TestAbortedUploadRevived: a part that the server finishes after the
// abort (its request was on the way, or held by a proxy, when the upload
// was canceled) brings the upload back, as S3's documentation warns; dj
// aborts again until the server reports the upload gone, so no parts stay
// behind to be billed. The recorder holds part 1 and hands it to the
// server right after the first abort.
func TestAbortedUploadRevived(t *testing.T) {
	u := newMultipartUpload(t)
	srv, rec, cfg, be, data, h := u.srv, u.rec, u.cfg, u.be, u.data, u.h
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held := make(chan *http.Request, 1)
	isHeld := make(chan struct{})
	var landed atomic.Bool
	rec.mu.Lock()
	rec.serve = func(w http.ResponseWriter, req *http.Request, proxy http.Handler) {
		switch {
		case req.URL.Query().Get("partNumber") == "1":
			body, err := io.ReadAll(req.Body)
			if err != nil {
				t.Errorf("read part 1: %v", err)
				return
			}
			late := req.Clone(context.Background())
			late.Body = io.NopCloser(bytes.NewReader(body))
			late.ContentLength = int64(len(body))
			held <- late
			close(isHeld)
			<-req.Context().Done() // the client gives up on it
		case req.URL.Query().Get("partNumber") == "2":
			<-isHeld
			cancel()
			proxy.ServeHTTP(w, req)
		case req.Method == http.MethodDelete && strings.Contains(req.URL.RawQuery, "uploadId="):
			// The server streams request bodies: once all but the last
			// byte of the held part have gone through, its handler is
			// past the check that the upload exists. The abort is served
			// then, and the last byte after it.
			abort := httptest.NewRecorder()
			select {
			case late := <-held:
				body, _ := io.ReadAll(late.Body)
				pr, pw := io.Pipe()
				late.Body = pr
				late.Header.Del("Expect")
				part := httptest.NewRecorder()
				done := make(chan struct{})
				go func() {
					defer close(done)
					proxy.ServeHTTP(part, late)
					_ = pr.Close() // the server answered: stop writing
				}()
				_, _ = pw.Write(body[:len(body)-1])
				proxy.ServeHTTP(abort, req)
				_, _ = pw.Write(body[len(body)-1:])
				_ = pw.Close()
				<-done
				landed.Store(part.Code == http.StatusOK)
			default:
				proxy.ServeHTTP(abort, req)
			}
			for k, v := range abort.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(abort.Code)
			_, _ = w.Write(abort.Body.Bytes())
		default:
			proxy.ServeHTTP(w, req)
		}
	}
	rec.mu.Unlock()
	if err := be.Save(ctx, h, data); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save canceled during its parts: %v", err)
	}
	if !landed.Load() {
		t.Fatalf("the held part did not land after the abort: the test did not make the race")
	}
	// versitygw leaves a revived upload out of its listing (its object
	// folder lost its attributes with the abort), so ask for its parts.
	var uploadID string
	rec.mu.Lock()
	for _, q := range rec.reqs {
		if q.method == http.MethodDelete {
			v, _ := url.ParseQuery(q.query)
			uploadID = v.Get("uploadId")
		}
	}
	rec.mu.Unlock()
	c := client(t, srv)
	_, err := c.ListParts(context.Background(), &awss3.ListPartsInput{
		Bucket: aws.String(cfg.Bucket), Key: aws.String(strings.TrimPrefix(rec.puts(h.Name)[0].path, "/"+cfg.Bucket+"/")), UploadId: aws.String(uploadID),
	})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "NoSuchUpload" {
		t.Errorf("ListParts of the upload after Save failed: %v, want NoSuchUpload: its parts were left behind", err)
	}
}

// TestSSE: the encryption options reach the server with every request
// that needs them: SSE-S3 and SSE-KMS on uploads, SSE-C's key also on
// every read.
func TestSSE(t *testing.T) {
	srv := server(t)
	keyFile := t.TempDir() + "/key"
	if err := os.WriteFile(keyFile, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		opts   map[string]string
		header string
		want   string
		reads  bool // the header goes with reads too
	}{
		{map[string]string{"s3.sse": "s3"}, "X-Amz-Server-Side-Encryption", "AES256", false},
		{map[string]string{"s3.sse": "kms", "s3.sse-kms-key-id": "key-1"}, "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id", "key-1", false},
		{map[string]string{"s3.sse": "c", "s3.sse-c-key-file": keyFile}, "X-Amz-Server-Side-Encryption-Customer-Algorithm", "AES256", true},
	}
	for _, tc := range tests {
		t.Run(tc.opts["s3.sse"], func(t *testing.T) {
			rec := newRecorder(t, srv.URL)
			cfg := newBucket(t, rec.srv.URL, tc.opts)
			ctx := context.Background()
			be := create(t, cfg)
			defer be.Close()
			data := random(t, 6<<20)
			h := handleOf(backend.PackFile, data)
			for _, d := range [][]byte{data[:1000], data} { // one PUT, one multipart upload
				_ = be.Save(ctx, handleOf(backend.PackFile, d), d) // the server may not do SSE: the wire is what counts
			}
			_, _ = be.Load(ctx, h, 0, 100)
			_, _ = be.Stat(ctx, h)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, q := range rec.reqs {
				if !strings.Contains(q.path, "/data/") || q.method == http.MethodDelete {
					continue
				}
				upload := q.method == http.MethodPut && !strings.Contains(q.query, "partNumber") ||
					q.method == http.MethodPost && strings.Contains(q.query, "uploads")
				part := strings.Contains(q.query, "partNumber")
				read := q.method == http.MethodGet || q.method == http.MethodHead
				wantIt := upload || (tc.reads && (part || read))
				if got := q.header.Get(tc.header); wantIt && got != tc.want {
					t.Errorf("%s %s?%s: %s %q, want %q", q.method, q.path, q.query, tc.header, got, tc.want)
				} else if !wantIt && got != "" {
					t.Errorf("%s %s?%s: %s %q, want none", q.method, q.path, q.query, tc.header, got)
				}
			}
		})
	}
}

// TestObjectLock: with -o s3.object-lock=DAYS, Create makes a bucket with
// object lock, every file is written under retention, and Remove refuses
// with a RetentionError that says until when (and is not retried); a file
// whose retention has ended is removed with all its versions.
func TestObjectLock(t *testing.T) {
	srv := server(t)
	ctx := context.Background()
	cfg := newBucket(t, srv.URL, map[string]string{"s3.object-lock": "1", "s3.object-lock-mode": "governance", "s3.part-size": "5"})
	be, err := s3.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create with object lock: %v", err)
	}
	defer be.Close()
	data := random(t, 2000)
	h := handleOf(backend.SnapshotFile, data)
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatalf("Save under object lock: %v", err)
	}
	big := random(t, 6<<20)
	hb := handleOf(backend.PackFile, big)
	if err := be.Save(ctx, hb, big); err != nil {
		t.Fatalf("multipart Save under object lock: %v", err)
	}
	before := time.Now()
	for _, h := range []backend.Handle{h, hb} {
		head := headObject(t, srv, be, h)
		if head.ObjectLockRetainUntilDate == nil {
			t.Skipf("the server (versitygw %s) keeps no retention for %v", testserver.S3ServerVersion, h)
		}
		if d := time.Until(*head.ObjectLockRetainUntilDate); d < 23*time.Hour || d > 25*time.Hour {
			t.Errorf("%v retained until %v, want a day from now", h, head.ObjectLockRetainUntilDate)
		}
		if head.ObjectLockMode != "GOVERNANCE" {
			t.Errorf("%v: lock mode %q", h, head.ObjectLockMode)
		}
		err := retry.New(be, retry.Options{}).Remove(ctx, h)
		if !errors.Is(err, backend.ErrRetained) || !retry.Permanent(err) {
			t.Fatalf("Remove of a retained file: %v, want a permanent backend.ErrRetained", err)
		}
		until, ok := backend.RetainedUntil(err)
		if !ok || until.Before(before.Add(23*time.Hour)) {
			t.Errorf("RetainedUntil: %v, %v", until, ok)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error of two lines: %q", err)
		}
		if _, err := be.Stat(ctx, h); err != nil {
			t.Errorf("Stat after a refused Remove: %v", err)
		}
	}

	// Lock files are never retained: a command removes its own.
	lock := random(t, 200)
	hl := handleOf(backend.LockFile, lock)
	if err := be.Save(ctx, hl, lock); err != nil {
		t.Fatal(err)
	}
	if head := headObject(t, srv, be, hl); head.ObjectLockRetainUntilDate != nil {
		t.Errorf("lock file retained until %v", head.ObjectLockRetainUntilDate)
	}
	if err := be.Remove(ctx, hl); err != nil {
		t.Errorf("Remove of a lock file under -o s3.object-lock: %v", err)
	}

	// A file written without retention (an earlier run without the
	// option) in the same bucket is removed with every version.
	plainCfg := cfg
	plainCfg.ObjectLockDays, plainCfg.ObjectLockMode = 0, ""
	plain, err := s3.Open(ctx, withConfig(t, be, plainCfg))
	if err != nil {
		t.Fatalf("Open without object lock: %v", err)
	}
	defer plain.Close()
	free := random(t, 300)
	hf := handleOf(backend.SnapshotFile, free)
	for i := 0; i < 2; i++ { // two versions
		if err := plain.Save(ctx, hf, free); err != nil {
			t.Fatal(err)
		}
	}
	if err := plain.Remove(ctx, hf); err != nil {
		t.Fatalf("Remove of a file without retention: %v", err)
	}
	if _, err := plain.Stat(ctx, hf); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat after Remove: %v", err)
	}
	if n := versionsOf(t, srv, be, hf); n != 0 {
		t.Errorf("Remove left %d versions or delete markers", n)
	}

	// Object lock on a bucket without it is refused when opening.
	noLock := newBucket(t, srv.URL, nil)
	create(t, noLock).Close()
	noLock.ObjectLockDays, noLock.ObjectLockMode = 3, s3.LockGovernance
	if _, err := s3.Open(ctx, noLock); err == nil || !strings.Contains(err.Error(), "object lock") {
		t.Errorf("Open with -o s3.object-lock on a bucket without it: %v", err)
	}
}

// withConfig saves a config file so that cfg's location opens.
func withConfig(t *testing.T, be *s3.Backend, cfg s3.Config) s3.Config {
	t.Helper()
	if err := be.Save(context.Background(), backend.Handle{Type: backend.ConfigFile}, []byte("config")); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// client returns a plain S3 client of srv, to look behind the backend.
func client(t *testing.T, srv *testserver.S3Server) *awss3.Client {
	t.Helper()
	awsCfg, err := awsconfig.LoadDefaultConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return awss3.NewFromConfig(awsCfg, func(o *awss3.Options) {
		o.BaseEndpoint = aws.String(srv.URL)
		o.UsePathStyle = true
	})
}

// versionsOf counts the versions and delete markers of h.
func versionsOf(t *testing.T, srv *testserver.S3Server, be *s3.Backend, h backend.Handle) int {
	t.Helper()
	loc := strings.TrimPrefix(be.Location(), "s3:http://")
	_, rest, _ := strings.Cut(loc, "/")
	bucket, prefix, _ := strings.Cut(rest, "/")
	c := client(t, srv)
	key := prefix + "/" + h.String()
	out, err := c.ListObjectVersions(context.Background(), &awss3.ListObjectVersionsInput{Bucket: aws.String(bucket), Prefix: aws.String(key)})
	if err != nil {
		t.Fatalf("ListObjectVersions: %v", err)
	}
	return len(out.Versions) + len(out.DeleteMarkers)
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func handleOf(typ backend.FileType, data []byte) backend.Handle {
	if typ == backend.ConfigFile {
		return backend.Handle{Type: typ}
	}
	sum := sha256.Sum256(data)
	return backend.Handle{Type: typ, Name: hex.EncodeToString(sum[:])}
}

// TestRemoveStaleTemp: prune's cleanup of temporary files aborts the
// multipart uploads a killed process left in the repository's folders
// once they are older than the age asked, and no other upload of the
// bucket.
func TestRemoveStaleTemp(t *testing.T) {
	srv := server(t)
	cfg := newBucket(t, srv.URL, nil)
	be := create(t, cfg)
	defer be.Close()
	ctx := context.Background()
	c := client(t, srv)
	start := func(key string) *string {
		out, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String(cfg.Bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatalf("CreateMultipartUpload %s: %v", key, err)
		}
		_, err = c.UploadPart(ctx, &awss3.UploadPartInput{
			Bucket: aws.String(cfg.Bucket), Key: aws.String(key), UploadId: out.UploadId,
			PartNumber: aws.Int32(1), Body: bytes.NewReader(random(t, 1000)),
		})
		if err != nil {
			t.Fatalf("UploadPart %s: %v", key, err)
		}
		return out.UploadId
	}
	pack := cfg.Prefix + "/data/ab/" + strings.Repeat("ab", 32)
	index := cfg.Prefix + "/index/" + strings.Repeat("cd", 32)
	other := "elsewhere/data/ab/" + strings.Repeat("ab", 32)
	for _, k := range []string{pack, index, other} {
		start(k)
	}
	if n, err := be.RemoveStaleTemp(ctx, time.Hour); err != nil || n != 0 {
		t.Errorf("RemoveStaleTemp(1h) of fresh uploads: %d aborted, %v; want 0", n, err)
	}
	time.Sleep(1100 * time.Millisecond) // the server keeps whole seconds
	if n, err := be.RemoveStaleTemp(ctx, time.Second); err != nil || n != 2 {
		t.Errorf("RemoveStaleTemp(1s): %d aborted, %v; want the 2 in the repository", n, err)
	}
	out, err := c.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: aws.String(cfg.Bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	var left []string
	for _, u := range out.Uploads {
		left = append(left, *u.Key)
	}
	if len(left) != 1 || left[0] != other {
		t.Errorf("uploads left: %q, want only %q", left, other)
	}
}
