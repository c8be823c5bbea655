package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestParseExtendedOptions(t *testing.T) {
	tests := []struct {
		items   []string
		want    map[string]string
		wantErr string
	}{
		{nil, map[string]string{}, ""},
		{[]string{"rest.connections=4"}, map[string]string{"rest.connections": "4"}, ""},
		{[]string{"rest.connections=4", "rest.connections=2"}, map[string]string{"rest.connections": "2"}, ""},
		{[]string{"foo.bar=1"}, nil, `unknown option "foo.bar" (known options: connections, rclone.args, rclone.program, rest.connections, s3.bucket-lookup, s3.object-lock, s3.object-lock-mode, s3.part-size, s3.profile, s3.region, s3.sse, s3.sse-c-key-file, s3.sse-kms-key-id, s3.storage-class, sftp.args, sftp.command, sftp.connections)`},
		{[]string{"sftp.connections=0"}, nil, `option sftp.connections: want a positive whole number`},
		{[]string{"connections=x"}, nil, `option connections: want a positive whole number`},
		{[]string{"connections=3", "sftp.args=-F /x/ssh config"}, map[string]string{"connections": "3", "sftp.args": "-F /x/ssh config"}, ""},
		{[]string{"rest.connections"}, nil, `option "rest.connections": want KEY=VALUE`},
		{[]string{"=4"}, nil, "want KEY=VALUE"},
		{[]string{"rest.connections=0"}, nil, `option rest.connections: want a positive whole number, got "0"`},
		{[]string{"rest.connections=many"}, nil, "positive whole number"},
	}
	for _, tt := range tests {
		got, err := parseExtendedOptions(tt.items)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.items, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.items, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("%q: %v, want %v", tt.items, got, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%q: %s=%q, want %q", tt.items, k, got[k], v)
			}
		}
	}
}

// TestGlobalFlagErrors runs dj with bad global flags: each fails with one
// line that names the flag, before any repository is touched.
func TestGlobalFlagErrors(t *testing.T) {
	cli.VersionFlag = &cli.BoolFlag{Name: "version"} // as main does: -v is --verbose
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-o", "foo.bar=1", "snapshots"}, nil, `unknown option "foo.bar"`},
		{[]string{"snapshots", "-o", "rest.connections=x"}, nil, "option rest.connections"},
		{[]string{"--pack-size", "2", "snapshots"}, nil, "--pack-size 2 MiB is out of range: want 4 to 128 MiB"},
		{[]string{"--pack-size", "129", "snapshots"}, nil, "out of range"},
		{[]string{"snapshots"}, map[string]string{"DJ_PACK_SIZE": "1000"}, "--pack-size 1000 MiB"},
		{[]string{"--limit-upload", "-1", "snapshots"}, nil, "--limit-upload -1: a rate cannot be negative"},
		{[]string{"snapshots"}, map[string]string{"DJ_LIMIT_DOWNLOAD": "-2"}, "--limit-download -2"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Setenv("DJ_REPOSITORY", t.TempDir()+"/none")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"dj"}, tt.args...), strings.NewReader(""), &stdout, &stderr)
			if code != exitError {
				t.Errorf("exit %d, want %d", code, exitError)
			}
			msg := stderr.String()
			if !strings.Contains(msg, tt.want) || strings.Count(msg, "\n") != 1 {
				t.Errorf("stderr %q, want one line with %q", msg, tt.want)
			}
			if strings.Contains(msg, "no repository") {
				t.Error("the repository was opened before the flags were checked")
			}
		})
	}
}

// TestGlobalsBeneathCommandFlag: a command's own flag of the same name
// (repack --pack-size SIZE) does not hide the global flag.
func TestGlobalsBeneathCommandFlag(t *testing.T) {
	var global uint
	var local string
	app := &cli.App{
		Flags: []cli.Flag{&cli.UintFlag{Name: "pack-size"}},
		Commands: []*cli.Command{{
			Name:  "repack",
			Flags: []cli.Flag{&cli.StringFlag{Name: "pack-size"}},
			Action: func(c *cli.Context) error {
				global, local = globals(c).Uint("pack-size"), c.String("pack-size")
				return nil
			},
		}},
		Writer: io.Discard, ErrWriter: io.Discard,
	}
	if err := app.Run([]string{"dj", "--pack-size", "32", "repack", "--pack-size", "8M"}); err != nil {
		t.Fatal(err)
	}
	if global != 32 || local != "8M" {
		t.Errorf("global %d, local %q; want 32 and 8M", global, local)
	}
}
