package sftp

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"dj/backend/limit"
)

// Config locates a repository on an SFTP server and says how to reach it.
type Config struct {
	// Location is the location string as the user gave it, for messages.
	Location string
	// User, Host and Port are what ssh is given; User and Port may be
	// empty (ssh's configuration decides then).
	User, Host, Port string
	// Path is the repository's directory on the server; a relative path
	// is relative to the login directory.
	Path string
	// Command replaces the whole ssh command line (-o sftp.command); it
	// must start an SFTP session on its standard input and output.
	Command string
	// Args are added to the ssh command line before the host (-o
	// sftp.args), such as "-F config" or "-i key".
	Args string
	// Connections is the most SSH connections used at once (-o
	// sftp.connections); 0 means DefaultConnections.
	Connections int
	// Rates limits the bytes sent and received over all connections.
	Rates limit.Rates
	// Stderr, if not nil, receives what ssh prints on its standard error
	// besides the error messages dj reports itself.
	Stderr io.Writer
	// StallTimeout ends a connection on which requests wait and nothing
	// has arrived for this long (a server or network that hangs without
	// closing the connection); the calls fail with a ConnectionLostError
	// and are retried. 0 means DefaultStallTimeout.
	StallTimeout time.Duration

	// connect bounds the wait for an SFTP session when a dial's context
	// does not (newBackend sets it and StallTimeout from the context of
	// Open or Create: a connection dialled later, under a request's
	// context, waits as long).
	connect time.Duration
}

// DefaultStallTimeout is the StallTimeout used when the Config does not
// say. Every answer counts as progress (a large upload gets one for each
// 255 KiB written), so only a connection that hangs reaches it.
const DefaultStallTimeout = 2 * time.Minute

// DefaultConnections is the number of SSH connections used when the
// Config does not say. Each carries many requests at once; one OpenSSH
// connection moves at most its channel window (2 MiB) per round trip, so
// across 20 ms each carries about 50-75 MB/s. More cost CPU for ssh and
// sshd on both ends and a handshake each. Paired runs on 2026-12-06 on a
// two-core machine with the server on it, across 20 ms: a restore of 272
// MB (a 256 MiB file and Go's net tree) 3.15 s with 2 connections, 3.00 s
// with 3 (5 pairs), 3.05-3.34 s with 4; a cold read of the 256 MiB file
// through a mount 153 MB/s with 2, 168 MB/s with 3 (4 pairs).
const DefaultConnections = 3

// Option keys this backend reads from -o.
const (
	OptionCommand     = "sftp.command"
	OptionArgs        = "sftp.args"
	OptionConnections = "sftp.connections"
)

// ParseLocation parses the three location forms and the sftp.* options:
//
//	sftp:[user@]host:path                (path as given: /abs or relative to home)
//	sftp://[user@]host[:port]//abs/path
//	sftp://[user@]host[:port]/rel/path   (relative to the login directory)
func ParseLocation(loc string, opts map[string]string) (Config, error) {
	cfg := Config{Location: loc, Command: opts[OptionCommand], Args: opts[OptionArgs]}
	if v := opts[OptionConnections]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return Config{}, fmt.Errorf("option %s: want a positive whole number, got %q", OptionConnections, v)
		}
		cfg.Connections = n
	}
	rest, ok := strings.CutPrefix(loc, "sftp:")
	if !ok {
		return Config{}, fmt.Errorf("%s: not an sftp location (want sftp:[user@]host:/path)", loc)
	}
	if strings.HasPrefix(rest, "//") {
		u, err := url.Parse(loc)
		if err != nil {
			return Config{}, fmt.Errorf("%s: invalid sftp URL: %w", loc, err)
		}
		if u.User != nil {
			cfg.User = u.User.Username()
			if _, set := u.User.Password(); set {
				return Config{}, fmt.Errorf("%s: a password in the location is not supported (use ssh keys or let ssh ask)", loc)
			}
		}
		cfg.Host, cfg.Port = u.Hostname(), u.Port()
		// The first slash separates host and path: //abs is /abs.
		cfg.Path = strings.TrimPrefix(u.Path, "/")
		if u.RawQuery != "" || u.Fragment != "" {
			return Config{}, fmt.Errorf("%s: an sftp URL takes no query or fragment", loc)
		}
	} else {
		hostPart, path, err := splitHostPath(rest)
		if err != nil {
			return Config{}, fmt.Errorf("%s: %w (want sftp:[user@]host:/path)", loc, err)
		}
		if i := strings.LastIndex(hostPart, "@"); i >= 0 {
			cfg.User, hostPart = hostPart[:i], hostPart[i+1:]
		}
		cfg.Host = strings.TrimSuffix(strings.TrimPrefix(hostPart, "["), "]")
		cfg.Path = path
	}
	if cfg.Host == "" && cfg.Command == "" {
		return Config{}, fmt.Errorf("%s: no host given (want sftp:[user@]host:/path)", loc)
	}
	if cfg.Path == "" || strings.Trim(cfg.Path, "/") == "" {
		return Config{}, fmt.Errorf("%s: no repository path given (want sftp:[user@]host:/path)", loc)
	}
	if strings.HasPrefix(cfg.Host, "-") || strings.HasPrefix(cfg.User, "-") {
		return Config{}, fmt.Errorf("%s: a host or user may not start with '-'", loc)
	}
	if cfg.Port != "" {
		if p, err := strconv.Atoi(cfg.Port); err != nil || p <= 0 || p > 65535 {
			return Config{}, fmt.Errorf("%s: invalid port %q", loc, cfg.Port)
		}
	}
	return cfg, nil
}

// splitHostPath splits "[user@]host:path" at the colon after the host;
// an IPv6 address is written in brackets.
func splitHostPath(s string) (host, path string, err error) {
	if i := strings.Index(s, "@["); i >= 0 || strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return "", "", fmt.Errorf("unclosed [ in the host")
		}
		return s[:end+1], s[end+2:], nil
	}
	host, path, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("no path after the host")
	}
	return host, path, nil
}

// command returns the program and arguments that open an SFTP session:
// sftp.command when set, else ssh [args] [-p port] [user@]host -s sftp.
func (c Config) command() ([]string, error) {
	if c.Command != "" {
		argv, err := splitCommand(c.Command)
		if err != nil {
			return nil, fmt.Errorf("option %s: %w", OptionCommand, err)
		}
		return argv, nil
	}
	argv := []string{"ssh"}
	if c.Args != "" {
		args, err := splitCommand(c.Args)
		if err != nil {
			return nil, fmt.Errorf("option %s: %w", OptionArgs, err)
		}
		argv = append(argv, args...)
	}
	if c.Port != "" {
		argv = append(argv, "-p", c.Port)
	}
	host := c.Host
	if c.User != "" {
		host = c.User + "@" + host
	}
	return append(argv, host, "-s", "sftp"), nil
}

// splitCommand splits a command line at blanks; single and double quotes
// group words, and a backslash escapes the next character outside single
// quotes. No other shell syntax is interpreted.
func splitCommand(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped, inWord = true, true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 || escaped {
		return nil, fmt.Errorf("unbalanced quote or trailing backslash in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 && strings.TrimSpace(s) != "" {
		return nil, fmt.Errorf("empty command")
	}
	return words, nil
}
