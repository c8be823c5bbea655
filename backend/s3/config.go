package s3

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Bucket lookup styles (-o s3.bucket-lookup).
const (
	LookupAuto = "auto" // virtual-hosted on AWS for DNS-safe bucket names, path style elsewhere
	LookupPath = "path" // https://host/bucket/key
	LookupDNS  = "dns"  // https://bucket.host/key
)

// Server-side encryption modes (-o s3.sse).
const (
	SSENone = ""
	SSES3   = "AES256"  // SSE-S3: keys managed by the storage
	SSEKMS  = "aws:kms" // SSE-KMS: keys in the key management service
	SSEC    = "SSE-C"   // SSE-C: a key of the customer sent with every request
)

// Object lock modes (-o s3.object-lock-mode).
const (
	LockGovernance = "GOVERNANCE"
	LockCompliance = "COMPLIANCE"
)

const (
	// DefaultPartSize is the part size of multipart uploads: a file larger
	// than this is uploaded in parts, several at once. Packs of the default
	// target size (16 MiB) go in one request.
	DefaultPartSize = 32 << 20
	// minPartSize is S3's smallest part (but the last).
	minPartSize = 5 << 20
	// maxPartSize is S3's largest part.
	maxPartSize = 5 << 30
)

// Config is a parsed s3 location and its -o s3.* options.
type Config struct {
	// Endpoint is host[:port] of the server; s3.amazonaws.com and the
	// regional s3.REGION.amazonaws.com names mean AWS itself.
	Endpoint string
	// Insecure is true for an http:// endpoint (a local server).
	Insecure bool
	// Bucket holds the repository, under Prefix (no leading or trailing
	// slash; empty for the bucket's root).
	Bucket string
	Prefix string

	// Region overrides the region of the AWS environment and profile.
	Region string
	// Profile overrides AWS_PROFILE.
	Profile string
	// BucketLookup is LookupAuto, LookupPath or LookupDNS.
	BucketLookup string
	// StorageClass is the storage class of data packs; empty for the
	// bucket's default. Every other file stays in STANDARD.
	StorageClass string
	// SSE is the server-side encryption: SSENone, SSES3, SSEKMS or SSEC.
	SSE string
	// SSEKMSKeyID is the KMS key of SSEKMS (empty: the account's default).
	SSEKMSKeyID string
	// SSECKey is the 32-byte customer key of SSEC.
	SSECKey []byte
	// ObjectLockDays > 0 writes every file with a retention period of that
	// many days in ObjectLockMode.
	ObjectLockDays int
	ObjectLockMode string
	// PartSize is the part size of multipart uploads.
	PartSize int64
}

// Option names, without the "s3." every one of them has on the command line.
var optionNames = []string{
	"bucket-lookup", "object-lock", "object-lock-mode", "part-size", "profile",
	"region", "sse", "sse-c-key-file", "sse-kms-key-id", "storage-class",
}

// ParseLocation parses an s3 location, with or without its "s3:" scheme:
//
//	s3:https://host[:port]/bucket[/prefix]
//	s3:http://host[:port]/bucket[/prefix]   (a server without TLS)
//	s3:host[:port]/bucket[/prefix]          (https; s3.amazonaws.com for AWS)
//
// and the options meant for it, the keys of opts that start with "s3."
// (others are left to the caller; an unknown s3.* key is an error):
//
//	s3.region, s3.profile            override the AWS environment and config
//	s3.bucket-lookup=auto|path|dns   how the bucket is addressed
//	s3.storage-class=CLASS           storage class of data packs only
//	s3.sse=s3|kms|c                  server-side encryption (SSE-S3, SSE-KMS, SSE-C)
//	s3.sse-kms-key-id=ID             the KMS key of s3.sse=kms
//	s3.sse-c-key-file=PATH           the 32-byte key of s3.sse=c (raw or base64)
//	s3.object-lock=DAYS              write every file under retention for DAYS
//	s3.object-lock-mode=governance|compliance   (default governance)
//	s3.part-size=MiB                 part size of multipart uploads (default 32)
func ParseLocation(loc string, opts map[string]string) (Config, error) {
	cfg := Config{BucketLookup: LookupAuto, PartSize: DefaultPartSize}
	rest := strings.TrimPrefix(loc, "s3:")
	var host, p string
	switch {
	case strings.HasPrefix(rest, "http://"), strings.HasPrefix(rest, "https://"):
		u, err := url.Parse(rest)
		if err != nil {
			return Config{}, fmt.Errorf("invalid s3 location %q: %w", loc, err)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return Config{}, fmt.Errorf("invalid s3 location %q: no user, query or fragment allowed (credentials come from the AWS environment)", redact(loc))
		}
		host, p = u.Host, u.Path
		cfg.Insecure = u.Scheme == "http"
	default:
		if strings.Contains(rest, "://") {
			return Config{}, fmt.Errorf("invalid s3 location %q: the endpoint must be http:// or https://", loc)
		}
		host, p, _ = strings.Cut(rest, "/")
	}
	if host == "" {
		return Config{}, fmt.Errorf("invalid s3 location %q: no host (use s3:s3.amazonaws.com/BUCKET for AWS)", loc)
	}
	if strings.ContainsAny(host, "@ ") {
		return Config{}, fmt.Errorf("invalid s3 location %q: invalid host %q", redact(loc), host)
	}
	cfg.Endpoint = strings.ToLower(host)
	p = strings.Trim(p, "/")
	bucket, prefix, _ := strings.Cut(p, "/")
	if bucket == "" {
		return Config{}, fmt.Errorf("invalid s3 location %q: no bucket (s3:HOST/BUCKET[/PREFIX])", loc)
	}
	if err := checkBucketName(bucket); err != nil {
		return Config{}, fmt.Errorf("invalid s3 location %q: %w", loc, err)
	}
	cfg.Bucket = bucket
	if prefix != "" {
		for _, el := range strings.Split(prefix, "/") {
			if el == "" || el == "." || el == ".." {
				return Config{}, fmt.Errorf("invalid s3 location %q: the prefix %q has an empty, . or .. element", loc, prefix)
			}
		}
		cfg.Prefix = path.Clean(prefix)
	}
	if err := cfg.applyOptions(opts); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// checkBucketName accepts the names S3 and the compatible servers accept:
// 3 to 63 lower-case letters, digits, dots, hyphens (and underscores, which
// older buckets and some servers have).
func checkBucketName(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters long", b)
	}
	for _, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("bucket name %q may hold only lower-case letters, digits, '.', '-' and '_'", b)
		}
	}
	return nil
}

// redact drops the user info of a URL-like location from messages.
func redact(loc string) string {
	if u, err := url.Parse(strings.TrimPrefix(loc, "s3:")); err == nil && u.User != nil {
		return "s3:" + u.Redacted()
	}
	return loc
}

func (cfg *Config) applyOptions(opts map[string]string) error {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first bad option is always the same one
	var keyFile string
	for _, k := range keys {
		name, ok := strings.CutPrefix(k, "s3.")
		if !ok {
			continue
		}
		v := strings.TrimSpace(opts[k])
		bad := func(want string) error {
			return fmt.Errorf("invalid option -o %s=%q: %s", k, v, want)
		}
		switch name {
		case "region":
			cfg.Region = v
		case "profile":
			cfg.Profile = v
		case "bucket-lookup":
			switch strings.ToLower(v) {
			case LookupAuto, LookupPath, LookupDNS:
				cfg.BucketLookup = strings.ToLower(v)
			default:
				return bad("want auto, path or dns")
			}
		case "storage-class":
			c := strings.ToUpper(v)
			for _, r := range c {
				if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
					return bad("want a storage class such as STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or GLACIER_IR")
				}
			}
			cfg.StorageClass = c
		case "sse":
			switch strings.ToLower(v) {
			case "", "none":
				cfg.SSE = SSENone
			case "s3", "sse-s3", "aes256":
				cfg.SSE = SSES3
			case "kms", "sse-kms", "aws:kms":
				cfg.SSE = SSEKMS
			case "c", "sse-c":
				cfg.SSE = SSEC
			default:
				return bad("want s3 (SSE-S3), kms (SSE-KMS) or c (SSE-C, with -o s3.sse-c-key-file)")
			}
		case "sse-kms-key-id":
			cfg.SSEKMSKeyID = v
		case "sse-c-key-file":
			keyFile = v
		case "object-lock":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 36500 {
				return bad("want a number of days (1 to 36500)")
			}
			cfg.ObjectLockDays = n
		case "object-lock-mode":
			switch strings.ToUpper(v) {
			case LockGovernance, LockCompliance:
				cfg.ObjectLockMode = strings.ToUpper(v)
			default:
				return bad("want governance or compliance")
			}
		case "part-size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < minPartSize>>20 || n > maxPartSize>>20 {
				return bad(fmt.Sprintf("want a size in MiB from %d to %d", minPartSize>>20, maxPartSize>>20))
			}
			cfg.PartSize = n << 20
		default:
			return fmt.Errorf("unknown option -o %s (s3 knows s3.%s)", k, strings.Join(optionNames, ", s3."))
		}
	}
	if cfg.ObjectLockDays > 0 && cfg.ObjectLockMode == "" {
		cfg.ObjectLockMode = LockGovernance
	}
	if cfg.ObjectLockMode != "" && cfg.ObjectLockDays == 0 {
		return fmt.Errorf("-o s3.object-lock-mode needs -o s3.object-lock=DAYS")
	}
	if cfg.SSEKMSKeyID != "" && cfg.SSE != SSEKMS {
		return fmt.Errorf("-o s3.sse-kms-key-id needs -o s3.sse=kms")
	}
	if (keyFile != "") != (cfg.SSE == SSEC) {
		return fmt.Errorf("-o s3.sse=c and -o s3.sse-c-key-file=PATH go together")
	}
	if keyFile != "" {
		key, err := readSSECKey(keyFile)
		if err != nil {
			return err
		}
		cfg.SSECKey = key
	}
	return nil
}

// readSSECKey reads a 32-byte SSE-C key, raw or base64, from a file.
func readSSECKey(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("-o s3.sse-c-key-file: %w", err)
	}
	if len(b) == 32 {
		return b, nil
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err == nil && len(k) == 32 {
		return k, nil
	}
	return nil, fmt.Errorf("-o s3.sse-c-key-file %s: want 32 bytes, raw or in base64", name)
}

// Location returns the location in its canonical form, for messages.
func (cfg Config) Location() string {
	scheme := "https://"
	if cfg.Insecure {
		scheme = "http://"
	}
	loc := "s3:" + scheme + cfg.Endpoint + "/" + cfg.Bucket
	if cfg.Prefix != "" {
		loc += "/" + cfg.Prefix
	}
	return loc
}

// isAWS reports whether the endpoint is AWS's own, and the region its name
// holds (s3.REGION.amazonaws.com, s3-REGION.amazonaws.com), if any.
func (cfg Config) isAWS() (aws bool, region string) {
	host := cfg.Endpoint
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	rest, ok := strings.CutSuffix(host, ".amazonaws.com")
	if !ok {
		return false, ""
	}
	switch {
	case rest == "s3":
		return true, ""
	case strings.HasPrefix(rest, "s3."):
		return true, strings.TrimPrefix(rest, "s3.")
	case strings.HasPrefix(rest, "s3-"):
		return true, strings.TrimPrefix(rest, "s3-")
	}
	return true, ""
}

// pathStyle reports whether the bucket goes into the path of requests.
func (cfg Config) pathStyle() bool {
	switch cfg.BucketLookup {
	case LookupPath:
		return true
	case LookupDNS:
		return false
	}
	aws, _ := cfg.isAWS()
	// Names with dots break TLS certificates of virtual-hosted buckets.
	return !aws || strings.ContainsAny(cfg.Bucket, "._")
}
