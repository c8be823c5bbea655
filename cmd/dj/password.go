package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// The repository password: from a file, a command, the environment or a
// prompt, and the terminal and stdin checks it needs.

// password returns the repository password from the flags, the
// environment, or a prompt on the terminal.
func (e *env) password(prompt string, confirm bool) (string, error) {
	if f := e.c.String(e.rf.passwordFile); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read password file: %w", err)
		}
		return firstLine(b), nil
	}
	if cmdline := e.c.String(e.rf.passwordCommand); cmdline != "" {
		cmd := exec.CommandContext(e.ctx, "sh", "-c", cmdline)
		cmd.Stderr = e.stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("password command failed: %w", err)
		}
		return firstLine(out), nil
	}
	if pw, ok := os.LookupEnv(e.rf.passwordEnv); ok {
		return pw, nil
	}
	return e.promptPassword(prompt, confirm)
}

// promptPassword asks for a password on the terminal. When standard input
// is not a terminal and carries no data for the command, the password is
// its next line instead, as restic does (`echo pw | dj snapshots`); a
// confirmation is then not asked for.
func (e *env) promptPassword(prompt string, confirm bool) (string, error) {
	in := e.c.App.Reader
	noPasswordHint := "no password given: " + e.rf.noPassword + ", or pipe it on standard input"
	if in != nil && !isTerminal(in) && !stdinCarriesData(e.c) {
		pw, err := readLine(in, maxPasswordLine)
		if err != nil {
			return "", fmt.Errorf("read password from standard input: %w", err)
		}
		if pw == "" {
			return "", usageError("%s (standard input held none)", noPasswordHint)
		}
		return pw, nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		if stdinCarriesData(e.c) {
			return "", usageError("%s (standard input carries the data to back up, so it cannot also carry the password)", noPasswordHint)
		}
		return "", usageError("%s", noPasswordHint)
	}
	defer tty.Close()
	read := func(p string) (string, error) {
		fmt.Fprint(tty, p)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		return string(b), err
	}
	pw, err := read(prompt)
	if err != nil {
		return "", err
	}
	if confirm {
		again, err := read("enter password again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", usageError("passwords do not match")
		}
	}
	if pw == "" {
		return "", usageError("empty password")
	}
	return pw, nil
}

// maxPasswordLine bounds a password line read from standard input.
const maxPasswordLine = 4096

// isTerminal reports whether s (a reader or writer) is a terminal.
func isTerminal(s any) bool {
	f, ok := s.(*os.File)
	return ok && f != nil && term.IsTerminal(int(f.Fd()))
}

// stdinCarriesData reports whether the command reads data from standard
// input (backup --stdin, --stdin-from-command, or a flag given "-", such
// as --files-from -), so that the password must come from elsewhere.
func stdinCarriesData(c *cli.Context) bool {
	if c.Bool("stdin") || c.Bool("stdin-from-command") {
		return true
	}
	for _, ctx := range c.Lineage() {
		if ctx.Command == nil {
			continue
		}
		for _, f := range ctx.Command.Flags {
			for _, name := range f.Names() {
				if !ctx.IsSet(name) {
					continue
				}
				switch f.(type) {
				case *cli.StringFlag, *cli.PathFlag:
					if ctx.String(name) == "-" {
						return true
					}
				case *cli.StringSliceFlag:
					for _, v := range ctx.StringSlice(name) {
						if v == "-" {
							return true
						}
					}
				}
			}
		}
	}
	return false
}

// readLine reads one line from r, byte by byte so that nothing after it
// is consumed (a second password may follow on the next line). The line
// ends at a newline or at the end of input; a trailing carriage return is
// dropped.
func readLine(r io.Reader, max int) (string, error) {
	var line []byte
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			if len(line) >= max {
				return "", fmt.Errorf("line longer than %d bytes", max)
			}
			line = append(line, b[0])
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimSuffix(string(line), "\r"), nil
}

func firstLine(b []byte) string {
	s := bufio.NewScanner(bytes.NewReader(b))
	if s.Scan() {
		return strings.TrimRight(s.Text(), "\r")
	}
	return ""
}
