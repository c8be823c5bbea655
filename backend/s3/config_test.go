package s3

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseLocation(t *testing.T) {
	tests := []struct {
		loc      string
		endpoint string
		insecure bool
		bucket   string
		prefix   string
		path     bool // path-style requests under bucket-lookup=auto
		location string
	}{
		{"s3:https://minio.example.com:9000/backups/host1", "minio.example.com:9000", false, "backups", "host1", true, "s3:https://minio.example.com:9000/backups/host1"},
		{"s3:http://127.0.0.1:7070/bucket", "127.0.0.1:7070", true, "bucket", "", true, "s3:http://127.0.0.1:7070/bucket"},
		{"s3:http://127.0.0.1:7070/bucket/", "127.0.0.1:7070", true, "bucket", "", true, "s3:http://127.0.0.1:7070/bucket"},
		{"s3:s3.amazonaws.com/bucket/a/b/c", "s3.amazonaws.com", false, "bucket", "a/b/c", false, "s3:https://s3.amazonaws.com/bucket/a/b/c"},
		{"s3:s3.eu-west-1.amazonaws.com/my-bucket", "s3.eu-west-1.amazonaws.com", false, "my-bucket", "", false, "s3:https://s3.eu-west-1.amazonaws.com/my-bucket"},
		{"s3:s3.amazonaws.com/dotted.bucket/x", "s3.amazonaws.com", false, "dotted.bucket", "x", true, "s3:https://s3.amazonaws.com/dotted.bucket/x"},
		{"s3:S3.AmazonAWS.com/bucket", "s3.amazonaws.com", false, "bucket", "", false, "s3:https://s3.amazonaws.com/bucket"},
		{"s3:storage.example.org/bucket/deep/", "storage.example.org", false, "bucket", "deep", true, ""},
		{"https://host/bucket/p", "host", false, "bucket", "p", true, ""}, // without its scheme
	}
	for _, tc := range tests {
		cfg, err := ParseLocation(tc.loc, nil)
		if err != nil {
			t.Errorf("ParseLocation(%q): %v", tc.loc, err)
			continue
		}
		if cfg.Endpoint != tc.endpoint || cfg.Insecure != tc.insecure || cfg.Bucket != tc.bucket || cfg.Prefix != tc.prefix {
			t.Errorf("ParseLocation(%q) = %+v", tc.loc, cfg)
		}
		if cfg.pathStyle() != tc.path {
			t.Errorf("ParseLocation(%q): path style %v, want %v", tc.loc, cfg.pathStyle(), tc.path)
		}
		if tc.location != "" && cfg.Location() != tc.location {
			t.Errorf("ParseLocation(%q).Location() = %q, want %q", tc.loc, cfg.Location(), tc.location)
		}
		if cfg.PartSize != DefaultPartSize || cfg.BucketLookup != LookupAuto {
			t.Errorf("ParseLocation(%q): defaults %+v", tc.loc, cfg)
		}
	}
}

func TestParseLocationErrors(t *testing.T) {
	tests := []struct{ loc, want string }{
		{"s3:", "no host"},
		{"s3:https:///bucket", "no host"},
		{"s3:host", "no bucket"},
		{"s3:host/", "no bucket"},
		{"s3:ftp://host/bucket", "http:// or https://"},
		{"s3:https://user:secret@host/bucket", "no user"},
		{"s3:https://host/bucket?x=1", "no user, query"},
		{"s3:host/ab", "3 to 63"},
		{"s3:host/Bucket", "lower-case"},
		{"s3:host/bucket/a/../b", ". or .."},
		{"s3:host/bucket/./b", ". or .."},
		{"s3:host/bucket//b", "empty"},
	}
	for _, tc := range tests {
		_, err := ParseLocation(tc.loc, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseLocation(%q): %v, want an error saying %q", tc.loc, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseLocation(%q): the error shows the password: %v", tc.loc, err)
		}
	}
}

func TestOptions(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	key64 := filepath.Join(t.TempDir(), "key64")
	if err := os.WriteFile(key64, []byte("a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := []struct {
		opts  map[string]string
		check func(Config) bool
	}{
		{map[string]string{"s3.bucket-lookup": "path"}, func(c Config) bool { return c.pathStyle() }},
		{map[string]string{"s3.bucket-lookup": "DNS"}, func(c Config) bool { return !c.pathStyle() }},
		{map[string]string{"s3.storage-class": "standard_ia"}, func(c Config) bool { return c.StorageClass == "STANDARD_IA" }},
		{map[string]string{"s3.sse": "s3"}, func(c Config) bool { return c.SSE == SSES3 }},
		{map[string]string{"s3.sse": "aws:kms", "s3.sse-kms-key-id": "k1"}, func(c Config) bool { return c.SSE == SSEKMS && c.SSEKMSKeyID == "k1" }},
		{map[string]string{"s3.sse": "c", "s3.sse-c-key-file": key}, func(c Config) bool { return c.SSE == SSEC && string(c.SSECKey) == strings.Repeat("k", 32) }},
		{map[string]string{"s3.sse": "c", "s3.sse-c-key-file": key64}, func(c Config) bool { return string(c.SSECKey) == strings.Repeat("k", 32) }},
		{map[string]string{"s3.object-lock": "30"}, func(c Config) bool { return c.ObjectLockDays == 30 && c.ObjectLockMode == LockGovernance }},
		{map[string]string{"s3.object-lock": "7", "s3.object-lock-mode": "compliance"}, func(c Config) bool { return c.ObjectLockMode == LockCompliance }},
		{map[string]string{"s3.part-size": "64"}, func(c Config) bool { return c.PartSize == 64<<20 }},
		{map[string]string{"s3.region": "eu-central-1", "s3.profile": "backup"}, func(c Config) bool { return c.Region == "eu-central-1" && c.Profile == "backup" }},
		{map[string]string{"sftp.command": "x", "connections": "4"}, func(c Config) bool { return true }}, // others' options
	}
	for _, tc := range ok {
		cfg, err := ParseLocation("s3:s3.amazonaws.com/bucket", tc.opts)
		if err != nil || !tc.check(cfg) {
			t.Errorf("options %v: %+v, %v", tc.opts, cfg, err)
		}
	}
	bad := []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"s3.bucket-lookup": "virtual"}, "auto, path or dns"},
		{map[string]string{"s3.storage-class": "cold storage"}, "storage class"},
		{map[string]string{"s3.sse": "yes"}, "s3 (SSE-S3)"},
		{map[string]string{"s3.sse": "c"}, "go together"},
		{map[string]string{"s3.sse-c-key-file": key}, "go together"},
		{map[string]string{"s3.sse": "c", "s3.sse-c-key-file": filepath.Join(t.TempDir(), "none")}, "no such file"},
		{map[string]string{"s3.sse": "c", "s3.sse-c-key-file": key + "x"}, "no such file"},
		{map[string]string{"s3.sse-kms-key-id": "k"}, "needs -o s3.sse=kms"},
		{map[string]string{"s3.object-lock": "-1"}, "number of days"},
		{map[string]string{"s3.object-lock": "many"}, "number of days"},
		{map[string]string{"s3.object-lock-mode": "governance"}, "needs -o s3.object-lock"},
		{map[string]string{"s3.object-lock": "1", "s3.object-lock-mode": "strict"}, "governance or compliance"},
		{map[string]string{"s3.part-size": "4"}, "MiB from 5"},
		{map[string]string{"s3.endpoint": "x"}, "unknown option -o s3.endpoint"},
	}
	for _, tc := range bad {
		_, err := ParseLocation("s3:s3.amazonaws.com/bucket", tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("options %v: %v, want an error saying %q", tc.opts, err, tc.want)
		}
	}
}

func TestIsAWS(t *testing.T) {
	tests := []struct {
		endpoint string
		aws      bool
		region   string
	}{
		{"s3.amazonaws.com", true, ""},
		{"s3.us-west-2.amazonaws.com", true, "us-west-2"},
		{"s3-eu-west-1.amazonaws.com", true, "eu-west-1"},
		{"s3.amazonaws.com:443", true, ""},
		{"minio.local:9000", false, ""},
		{"127.0.0.1:7070", false, ""},
	}
	for _, tc := range tests {
		aws, region := Config{Endpoint: tc.endpoint}.isAWS()
		if aws != tc.aws || region != tc.region {
			t.Errorf("isAWS(%q) = %v, %q", tc.endpoint, aws, region)
		}
	}
}
