package location

import (
	"context"
	"crypto/tls"
	"net/http"
	"strconv"
	"strings"
	"time"

	"dj/backend"
	"dj/backend/limit"
	"dj/backend/local"
	"dj/backend/rclone"
	"dj/backend/rest"
	"dj/backend/s3"
	"dj/backend/sftp"
)

// Builtin returns the schemes dj has: local directories (the fallback,
// also written "local:/path"), dj serve or rest-server over "rest:", and
// SFTP over the user's ssh, S3-compatible object storage, and everything
// rclone reaches. New schemes are added here.
func Builtin() []Scheme {
	return []Scheme{
		Local(),
		REST(),
		SFTP(),
		S3(),
		Rclone(),
	}
}

// NewBuiltin returns a registry of the Builtin schemes with local as the
// fallback.
func NewBuiltin() *Registry {
	r, err := New("local", Builtin()...)
	if err != nil {
		panic(err) // the built-in schemes are consistent
	}
	return r
}

// Local is the scheme of a directory on this machine.
func Local() Scheme {
	return Define(Scheme{Name: "local", Usage: "a local directory"},
		func(loc string, _ Params) (string, error) { return strings.TrimPrefix(loc, "local:"), nil },
		func(ctx context.Context, dir string) (backend.Backend, error) { return nilIfErr(local.Open(ctx, dir)) },
		func(ctx context.Context, dir string) (backend.Backend, error) {
			return nilIfErr(local.Create(ctx, dir))
		})
}

// OptionRESTConnections bounds the connections to a REST server.
const OptionRESTConnections = "rest.connections"

type restConfig struct {
	url string
	hc  *http.Client
}

// REST is the scheme of a REST server: `dj serve` or restic's
// rest-server. The rate limits pace the HTTP bodies as they stream.
func REST() Scheme {
	return Define(Scheme{Name: "rest", Usage: "rest:URL", Remote: true, PacesItself: true,
		Options: []Option{{Key: OptionRESTConnections, Help: "most connections to a REST server at once (default: unlimited)", Check: CheckPositiveInt}}},
		func(loc string, p Params) (restConfig, error) {
			return restConfig{url: strings.TrimPrefix(loc, "rest:"), hc: restHTTPClient(p.Options, p.Rates, p.TLS)}, nil
		},
		func(ctx context.Context, c restConfig) (backend.Backend, error) {
			return nilIfErr(rest.Open(ctx, c.url, c.hc))
		},
		func(ctx context.Context, c restConfig) (backend.Backend, error) {
			return nilIfErr(rest.Create(ctx, c.url, c.hc))
		})
}

// restHTTPClient returns the HTTP client for a REST repository: with
// rest.connections and the rate limits applied to its transport, so that
// uploads and downloads are paced as they stream, and the TLS
// configuration. It returns nil, the REST backend's own client, when
// nothing asks for another.
func restHTTPClient(opts map[string]string, rates limit.Rates, tlsConf *tls.Config) *http.Client {
	conns, _ := strconv.Atoi(opts[OptionRESTConnections])
	if conns <= 0 && rates == (limit.Rates{}) && tlsConf == nil {
		return nil
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConf != nil {
		t.TLSClientConfig = tlsConf.Clone()
	}
	// As the REST backend's own client.
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = 5 * time.Minute
	if conns > 0 {
		t.MaxConnsPerHost = conns
		t.MaxIdleConnsPerHost = conns
	}
	return &http.Client{Transport: limit.Transport(t, rates)}
}

// SFTP is the scheme of an SFTP server reached through ssh. The rate
// limits pace the pipes to ssh.
func SFTP() Scheme {
	return Define(Scheme{Name: "sftp", Usage: "sftp:[user@]host:/path", Remote: true, PacesItself: true,
		Options: []Option{
			{Key: sftp.OptionCommand, Help: "command that opens an SFTP session, replacing `ssh [-p port] [user@]host -s sftp`"},
			{Key: sftp.OptionArgs, Help: "more arguments for ssh, such as \"-F FILE\" or \"-i KEY\""},
			{Key: sftp.OptionConnections, Help: "most SSH connections at once (default: " + strconv.Itoa(sftp.DefaultConnections) + ")", Check: CheckPositiveInt},
		}},
		func(loc string, p Params) (sftp.Config, error) {
			cfg, err := sftp.ParseLocation(loc, p.Options)
			cfg.Rates, cfg.Stderr = p.Rates, p.Stderr
			return cfg, err
		},
		func(ctx context.Context, c sftp.Config) (backend.Backend, error) { return nilIfErr(sftp.Open(ctx, c)) },
		func(ctx context.Context, c sftp.Config) (backend.Backend, error) {
			return nilIfErr(sftp.Create(ctx, c))
		})
}

// S3 is the scheme of S3-compatible object storage (AWS, MinIO, Ceph RGW,
// SeaweedFS, Garage, Wasabi, B2, R2). Credentials and region come from the
// standard AWS environment and config files.
func S3() Scheme {
	return Define(Scheme{Name: "s3", Usage: "s3:https://host[:port]/bucket[/prefix]", Remote: true,
		Options: []Option{
			{Key: "s3.region", Help: "the bucket's region (default: from the AWS environment and config)"},
			{Key: "s3.profile", Help: "the AWS config profile"},
			{Key: "s3.bucket-lookup", Help: "auto, path or dns: how the bucket is addressed"},
			{Key: "s3.storage-class", Help: "storage class of data packs; config, keys, index, snapshots, locks and tree packs stay STANDARD"},
			{Key: "s3.sse", Help: "server-side encryption: s3, kms or c"},
			{Key: "s3.sse-kms-key-id", Help: "the KMS key of s3.sse=kms"},
			{Key: "s3.sse-c-key-file", Help: "file holding the 32-byte key of s3.sse=c"},
			{Key: "s3.object-lock", Help: "write every file with a retention of DAYS (object lock; give it on every command that writes)", Check: CheckPositiveInt},
			{Key: "s3.object-lock-mode", Help: "governance or compliance (default: governance)"},
			{Key: "s3.part-size", Help: "multipart upload part size in MiB", Check: CheckPositiveInt},
		}},
		func(loc string, p Params) (s3.Config, error) { return s3.ParseLocation(loc, p.Options) },
		func(ctx context.Context, c s3.Config) (backend.Backend, error) { return nilIfErr(s3.Open(ctx, c)) },
		func(ctx context.Context, c s3.Config) (backend.Backend, error) {
			return nilIfErr(s3.Create(ctx, c))
		})
}

// Rclone is the scheme of everything rclone reaches: rclone:REMOTE:PATH,
// through `rclone serve restic --stdio`. The rate limits pace the pipes.
func Rclone() Scheme {
	return Define(Scheme{Name: "rclone", Usage: "rclone:remote:path", Remote: true, PacesItself: true,
		Options: []Option{
			{Key: "rclone.program", Help: "the rclone binary (default: rclone on PATH)"},
			{Key: "rclone.args", Help: "rclone's words before the remote (default: serve restic --stdio)"},
		}},
		func(loc string, p Params) (rclone.Config, error) {
			cfg, err := rclone.ParseLocation(loc, p.Options)
			cfg.Stderr, cfg.Rates = p.Stderr, p.Rates
			return cfg, err
		},
		func(ctx context.Context, c rclone.Config) (backend.Backend, error) {
			return nilIfErr(rclone.Open(ctx, c))
		},
		func(ctx context.Context, c rclone.Config) (backend.Backend, error) {
			return nilIfErr(rclone.Create(ctx, c))
		})
}

// nilIfErr turns a typed result into a backend.Backend that is nil (not
// a typed nil) when err is set.
func nilIfErr[B backend.Backend](b B, err error) (backend.Backend, error) {
	if err != nil {
		return nil, err
	}
	return b, nil
}
