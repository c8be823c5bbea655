// Package s3 stores a repository in a bucket of Amazon S3 or of an
// S3-compatible server (MinIO, Ceph RGW, SeaweedFS, Garage, versitygw,
// Wasabi, Backblaze B2, Cloudflare R2), with aws-sdk-go-v2.
//
// The layout under the location's prefix is the repository's own:
// config, keys/ID, data/XX/ID, index/ID, snapshots/ID, locks/ID.
// Credentials and the region come from the standard AWS environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
// AWS_PROFILE, ~/.aws/config and ~/.aws/credentials, SSO, web identity,
// the instance's role). Request checksums are sent only where an operation
// requires them: the SDK's default CRC32 headers break Ceph, B2 and other
// servers.
//
// The SDK does not retry: the retry decorator (backend/retry) that wraps
// every remote backend does, and errors a retry cannot cure say so
// (Permanent).
package s3

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/logging"

	"dj/backend"
)

const (
	// maxFileSize bounds what Load accepts for one file.
	maxFileSize = 4 << 30
	// dialTimeout bounds connecting to the endpoint.
	dialTimeout = 30 * time.Second
	// responseHeaderTimeout bounds waiting for an answer to a request that
	// was sent whole.
	responseHeaderTimeout = 5 * time.Minute
	// credentialsTimeout bounds finding credentials when opening.
	credentialsTimeout = 30 * time.Second
	// partsInFlight is how many parts of one multipart upload go at once.
	partsInFlight = 4
)

// Backend is a backend.Backend in an S3 bucket. Its methods are safe for
// concurrent use.
type Backend struct {
	cfg    Config
	client *s3.Client
	// transports are those the SDK built for the client, to close.
	mu         sync.Mutex
	transports []*http.Transport
	// lockedBucket is true when the bucket has object lock, and so
	// versioning: Remove deletes every version of a file, not just hides
	// it behind a delete marker.
	lockedBucket bool
	// configListed is true when checkBucket's listing showed the config
	// file, so that Open needs no request of its own to find it.
	configListed bool
	now          func() time.Time
	// stall is the stall time-out the backend was opened with (the
	// context of Open may shorten it; a request's context may too).
	stall time.Duration
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.RangeLoader = (*Backend)(nil)
	_ backend.TempCleaner = (*Backend)(nil)
	_ backend.IntoLoader  = (*Backend)(nil)
)

// Open connects to the repository of cfg. The bucket must exist and hold
// a config file; if it holds none the error says "no repository at
// s3:..." and satisfies errors.Is(err, fs.ErrNotExist).
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	b, err := newBackend(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := b.checkBucket(ctx); err != nil {
		b.Close()
		return nil, err
	}
	if b.configListed {
		return b, nil // a round trip saved on every command
	}
	if _, err := b.Stat(ctx, backend.Handle{Type: backend.ConfigFile}); err != nil {
		b.Close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no repository at %s: %w", b.Location(), fs.ErrNotExist)
		}
		return nil, fmt.Errorf("open repository at %s: %w", b.Location(), err)
	}
	return b, nil
}

// Create prepares cfg's location for a new repository: it creates the
// bucket when it is missing (with object lock when cfg asks for it) and
// refuses, with an error satisfying errors.Is(err, fs.ErrExist), a
// location that already holds a config file. The config file itself is
// saved by the repository layer.
func Create(ctx context.Context, cfg Config) (*Backend, error) {
	b, err := newBackend(ctx, cfg)
	if err != nil {
		return nil, err
	}
	err = b.checkBucket(ctx)
	if errors.Is(err, ErrNoBucket) {
		err = b.createBucket(ctx)
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	_, err = b.Stat(ctx, backend.Handle{Type: backend.ConfigFile})
	switch {
	case err == nil:
		b.Close()
		return nil, fmt.Errorf("create repository at %s: config file already exists: %w", b.Location(), fs.ErrExist)
	case !errors.Is(err, fs.ErrNotExist):
		b.Close()
		return nil, fmt.Errorf("create repository at %s: %w", b.Location(), err)
	}
	return b, nil
}

// newBackend builds the client of cfg and makes sure it has credentials.
func newBackend(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.BucketLookup == "" {
		cfg.BucketLookup = LookupAuto
	}
	if cfg.ObjectLockDays > 0 && cfg.ObjectLockMode == "" {
		cfg.ObjectLockMode = LockGovernance
	}
	b := &Backend{cfg: cfg, now: time.Now, stall: backend.StallTimeout(ctx, backend.DefaultStallTimeout)}
	// A buildable client: the SDK adds the CA bundle of AWS_CA_BUNDLE to it.
	hc := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = dialTimeout }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConnsPerHost = 64
			tr.ResponseHeaderTimeout = backend.StallTimeout(ctx, responseHeaderTimeout)
			tr.TLSHandshakeTimeout = dialTimeout
			b.mu.Lock()
			b.transports = append(b.transports, tr)
			b.mu.Unlock()
		})

	isAWS, hostRegion := cfg.isAWS()
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithHTTPClient(hc),
		awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	switch {
	case cfg.Region != "":
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	case hostRegion != "":
		opts = append(opts, awsconfig.WithRegion(hostRegion))
	}
	if cfg.Profile != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(cfg.Profile))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: AWS configuration: %v", cfg.Location(), err)
	}
	// Every answer's body is read under the stall time-out: the SDK reads
	// listings and error answers itself, after the response-header
	// time-out has ended, and a server that stalls there hung dj.
	awsCfg.HTTPClient = stallGuardedClient{c: awsCfg.HTTPClient, idle: backend.StallTimeout(ctx, backend.DefaultStallTimeout)}
	// The SDK's own warnings (a body it could not drain after such a
	// stall) would reach the user's terminal beside dj's error.
	awsCfg.Logger = logging.Nop{}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1" // what S3-compatible servers expect unless told otherwise
	}
	if err := checkCredentials(ctx, awsCfg); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Location(), err)
	}
	b.client = b.newClient(awsCfg, isAWS)
	return b, nil
}

// newClient returns the S3 client for awsCfg.
func (b *Backend) newClient(awsCfg aws.Config, isAWS bool) *s3.Client {
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = b.cfg.pathStyle()
		if !isAWS {
			scheme := "https://"
			if b.cfg.Insecure {
				scheme = "http://"
			}
			o.BaseEndpoint = aws.String(scheme + b.cfg.Endpoint)
		} else if b.cfg.Insecure {
			o.EndpointOptions.DisableHTTPS = true
		}
	})
}

// checkCredentials makes sure the AWS environment has credentials.
func checkCredentials(ctx context.Context, awsCfg aws.Config) error {
	const hint = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (or -o s3.profile) to a profile of ~/.aws/credentials"
	if awsCfg.Credentials == nil {
		return fmt.Errorf("%w: %s", ErrNoCredentials, hint)
	}
	cctx, cancel := context.WithTimeout(ctx, credentialsTimeout)
	defer cancel()
	creds, err := awsCfg.Credentials.Retrieve(cctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w (%s): %s", ErrNoCredentials, short(err), hint)
	}
	if creds.AccessKeyID == "" {
		return fmt.Errorf("%w: %s", ErrNoCredentials, hint)
	}
	return nil
}

// checkBucket makes sure the bucket exists and can be reached, follows AWS
// to the bucket's region when no region was configured, and learns
// whether the bucket has object lock.
func (b *Backend) checkBucket(ctx context.Context) error {
	// A listing, not HeadBucket: the answer to a HEAD has no body, and so
	// no error code to tell a missing bucket from a denied request.
	list := func() error {
		out, err := b.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
			Bucket: aws.String(b.cfg.Bucket), Prefix: aws.String(b.join("config")), MaxKeys: aws.Int32(1),
		})
		// The config file, if there is one, is the first key with its
		// own name as prefix.
		b.configListed = err == nil && len(out.Contents) > 0 && aws.ToString(out.Contents[0].Key) == b.join("config")
		return err
	}
	// The object lock query goes out with the listing: one round trip
	// for both on every command.
	type lockAnswer struct {
		out *s3.GetObjectLockConfigurationOutput
		err error
	}
	client := b.client
	lockc := make(chan lockAnswer, 1)
	go func() {
		out, err := client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(b.cfg.Bucket)})
		lockc <- lockAnswer{out, err}
	}()
	err := list()
	ans := <-lockc
	if region := bucketRegion(err); region != "" && region != b.client.Options().Region {
		opts := b.client.Options()
		opts.Region = region
		b.client = s3.New(opts)
		err = list()
		if err == nil {
			return b.checkLock(ctx) // the first answer came from the wrong region
		}
	}
	if err != nil {
		return b.bucketError(ctx, err)
	}
	return b.applyLock(ctx, ans.out, ans.err)
}

// bucketRegion returns the region AWS names in an answer to a request
// sent to the wrong one.
func bucketRegion(err error) string {
	var re *awshttp.ResponseError
	if err == nil || !errors.As(err, &re) || re.Response == nil {
		return ""
	}
	return re.Response.Header.Get("X-Amz-Bucket-Region")
}

// bucketError turns the failure of a request on the bucket into one line
// that names the location and what to do.
func (b *Backend) bucketError(ctx context.Context, err error) error {
	err = convert(ctx, err)
	loc := b.Location()
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, ErrNoBucket):
		return fmt.Errorf("%s: bucket %q does not exist (dj init creates it): %w", loc, b.cfg.Bucket, ErrNoBucket)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: access denied to bucket %q: %w", loc, b.cfg.Bucket, err)
	case errors.Is(err, ErrUnreachable):
		return fmt.Errorf("%s: cannot reach %s: %w", loc, b.cfg.Endpoint, err)
	}
	return fmt.Errorf("%s: %w", loc, err)
}

// checkLock learns whether the bucket has object lock, and refuses to
// write under retention into a bucket without it.
func (b *Backend) checkLock(ctx context.Context) error {
	out, err := b.client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(b.cfg.Bucket)})
	return b.applyLock(ctx, out, err)
}

// applyLock records the bucket's object lock from the answer to
// GetObjectLockConfiguration, and refuses a bucket without it when writes
// are to be retained.
func (b *Backend) applyLock(ctx context.Context, out *s3.GetObjectLockConfigurationOutput, err error) error {
	if err == nil && out.ObjectLockConfiguration != nil &&
		out.ObjectLockConfiguration.ObjectLockEnabled == types.ObjectLockEnabledEnabled {
		b.lockedBucket = true
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if b.cfg.ObjectLockDays > 0 {
		why := "it has no object lock"
		if err != nil {
			why = "its object lock configuration cannot be read: " + convert(ctx, err).Error()
		}
		return fmt.Errorf("%s: -o s3.object-lock needs a bucket with object lock, and %s (dj init with -o s3.object-lock creates a new bucket with it)", b.Location(), why)
	}
	return nil
}

// createBucket creates the bucket, with object lock when writes are to be
// retained.
func (b *Backend) createBucket(ctx context.Context) error {
	in := &s3.CreateBucketInput{Bucket: aws.String(b.cfg.Bucket)}
	if region := b.client.Options().Region; region != "us-east-1" {
		if isAWS, _ := b.cfg.isAWS(); isAWS {
			in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(region)}
		}
	}
	if b.cfg.ObjectLockDays > 0 {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	if _, err := b.client.CreateBucket(ctx, in); err != nil {
		var e *Error
		if cerr := convert(ctx, err); errors.As(cerr, &e) && e.Code == "BucketAlreadyOwnedByYou" {
			return b.checkLock(ctx)
		}
		return fmt.Errorf("%s: create bucket %q: %w", b.Location(), b.cfg.Bucket, convert(ctx, err))
	}
	return b.checkLock(ctx)
}

// Location returns the location, "s3:" and the endpoint's URL with the
// bucket and prefix.
func (b *Backend) Location() string { return b.cfg.Location() }

// Close releases idle connections.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, tr := range b.transports {
		tr.CloseIdleConnections()
	}
	return nil
}

// key returns the object key of h after checking that h is well formed.
func (b *Backend) key(h backend.Handle) (string, error) {
	if err := h.Validate(); err != nil {
		return "", err
	}
	return b.join(h.String()), nil
}

func (b *Backend) join(p string) string {
	if b.cfg.Prefix == "" {
		return p
	}
	return b.cfg.Prefix + "/" + p
}

// storageClass returns the storage class of a file: the configured one
// for data packs, which the writer marks (backend.WithPackKind), and
// STANDARD for everything else a command reads often or small: config,
// keys, indexes, snapshots, locks and tree packs.
func (b *Backend) storageClass(ctx context.Context, h backend.Handle) types.StorageClass {
	if b.cfg.StorageClass == "" {
		return ""
	}
	if h.Type == backend.PackFile && backend.PackKindFrom(ctx) == backend.DataPack {
		return types.StorageClass(b.cfg.StorageClass)
	}
	return types.StorageClassStandard
}

// sseC returns the SSE-C algorithm, key and key MD5 headers (all nil
// without SSE-C).
func (b *Backend) sseC() (alg, key, keyMD5 *string) {
	if b.cfg.SSE != SSEC {
		return nil, nil, nil
	}
	sum := md5.Sum(b.cfg.SSECKey)
	return aws.String("AES256"), aws.String(base64.StdEncoding.EncodeToString(b.cfg.SSECKey)),
		aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

// sse returns the server-side encryption headers of an upload (empty
// without SSE-S3 or SSE-KMS; SSE-C goes through sseC).
func (b *Backend) sse() (types.ServerSideEncryption, *string) {
	switch b.cfg.SSE {
	case SSES3:
		return types.ServerSideEncryptionAes256, nil
	case SSEKMS:
		if b.cfg.SSEKMSKeyID != "" {
			return types.ServerSideEncryptionAwsKms, aws.String(b.cfg.SSEKMSKeyID)
		}
		return types.ServerSideEncryptionAwsKms, nil
	}
	return "", nil
}

// objectLock returns the object lock headers of an upload of h (empty
// when it is not retained).
func (b *Backend) objectLock(h backend.Handle) (types.ObjectLockMode, *time.Time) {
	until := b.retainUntil(h)
	if until == nil {
		return "", nil
	}
	return types.ObjectLockMode(b.cfg.ObjectLockMode), until
}

// retainUntil returns the end of the retention of h written now, nil for
// none. Lock files are never retained: a command removes its lock when it
// ends and replaces it every few minutes while it runs, and a lock that
// cannot be removed would stand in the way of every later command.
func (b *Backend) retainUntil(h backend.Handle) *time.Time {
	if b.cfg.ObjectLockDays == 0 || h.Type == backend.LockFile {
		return nil
	}
	t := b.now().Add(time.Duration(b.cfg.ObjectLockDays) * 24 * time.Hour).UTC().Truncate(time.Second)
	return &t
}

// contentMD5 returns the Content-MD5 header S3 requires of writes under
// object lock (nil otherwise: no checksum unless an operation needs one).
func (b *Backend) contentMD5(h backend.Handle, data []byte) *string {
	if b.retainUntil(h) == nil {
		return nil
	}
	sum := md5.Sum(data)
	return aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

// Save uploads data to h: in one request, or in parts of the part size,
// several at once, when it is larger.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	key, err := b.key(h)
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	if int64(len(data)) > b.cfg.PartSize {
		err = b.saveMultipart(ctx, h, key, data)
	} else {
		err = b.put(ctx, h, key, data)
	}
	if err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	return nil
}

func (b *Backend) put(ctx context.Context, h backend.Handle, key string, data []byte) error {
	// A connection that stops taking the body ends the request.
	w := backend.WatchUpload(ctx, data, backend.StallTimeout(ctx, b.stall))
	defer w.Stop()
	in := &s3.PutObjectInput{
		Bucket:        aws.String(b.cfg.Bucket),
		Key:           aws.String(key),
		Body:          w.Body(),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String("application/octet-stream"),
		ContentMD5:    b.contentMD5(h, data),
		StorageClass:  b.storageClass(ctx, h),
	}
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = b.sseC()
	in.ServerSideEncryption, in.SSEKMSKeyId = b.sse()
	in.ObjectLockMode, in.ObjectLockRetainUntilDate = b.objectLock(h)
	_, err := b.client.PutObject(w.Context(), in)
	return convert(ctx, w.Err(err))
}

// stallGuardedClient is an HTTP client whose answers' bodies end with an
// error in the class backend.ErrUnreachable when no bytes come for idle.
type stallGuardedClient struct {
	c    aws.HTTPClient
	idle time.Duration
}

// Do sends req and guards the body of its answer.
func (s stallGuardedClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := s.c.Do(req)
	if err == nil && resp.Body != nil {
		resp.Body = backend.GuardStall(resp.Body, s.idle)
	}
	return resp, err
}
