package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
)

// backupTargets returns what `dj backup` saves: the path arguments and the
// entries of the --files-from, --files-from-verbatim and --files-from-raw
// lists, as restic reads them. Listed paths that do not exist are reported
// and skipped; missing counts them (the backup then ends with exit code 3).
// A path argument that does not exist stays an error (CleanPaths).
func backupTargets(e *env, c *cli.Context) (targets []string, missing int, err error) {
	var listed []string
	for _, name := range c.StringSlice("files-from") {
		lines, err := readListLines(name)
		if err != nil {
			return nil, 0, fmt.Errorf("--files-from: %w", err)
		}
		for _, line := range lines {
			// Patterns: blanks around them, empty lines and # comments
			// are ignored; each is expanded like a shell glob.
			line = strings.TrimSpace(line)
			if line == "" || line[0] == '#' {
				continue
			}
			matches, err := filepath.Glob(line)
			if err != nil {
				return nil, 0, usageError("--files-from %s: invalid pattern %q: %v", name, line, err)
			}
			if len(matches) == 0 {
				e.warnf("pattern %q does not match any files, skipping\n", line)
			}
			targets = append(targets, matches...)
		}
	}
	for _, name := range c.StringSlice("files-from-verbatim") {
		lines, err := readListLines(name)
		if err != nil {
			return nil, 0, fmt.Errorf("--files-from-verbatim: %w", err)
		}
		for _, line := range lines {
			if line != "" {
				listed = append(listed, line)
			}
		}
	}
	for _, name := range c.StringSlice("files-from-raw") {
		names, err := readListRaw(name)
		if err != nil {
			return nil, 0, fmt.Errorf("--files-from-raw: %w", err)
		}
		listed = append(listed, names...)
	}
	for _, p := range listed {
		if _, err := os.Lstat(p); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				e.warnf("%s does not exist, skipping\n", p)
			} else {
				e.warnf("%s cannot be accessed, skipping: %v\n", p, unwrapPathError(err))
			}
			missing++
			continue
		}
		targets = append(targets, p)
	}
	targets = append(targets, c.Args().Slice()...)
	if len(targets) == 0 {
		if missing > 0 {
			return nil, missing, errors.New("all source directories/files do not exist")
		}
		return nil, 0, usageError("nothing to back up: give at least one path (or --files-from)")
	}
	return targets, missing, nil
}

// readList reads a list file; "-" is standard input.
func readList(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// readListLines returns the lines of a list file, without their line ends
// ("\n" or "\r\n") and without a UTF-8 byte order mark.
func readListLines(name string) ([]string, error) {
	b, err := readList(name)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	if len(b) == 0 {
		return nil, nil
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines, nil
}

// readListRaw returns the names of a list file in which every name ends
// with a NUL byte (find -print0).
func readListRaw(name string) ([]string, error) {
	b, err := readList(name)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, nil
	}
	if b[len(b)-1] != 0 {
		return nil, usageError("--files-from-raw %s: the last name does not end with a NUL byte", name)
	}
	names := strings.Split(string(b[:len(b)-1]), "\x00")
	for _, n := range names {
		if n == "" {
			return nil, usageError("--files-from-raw %s: empty file name in the list", name)
		}
	}
	return names, nil
}
