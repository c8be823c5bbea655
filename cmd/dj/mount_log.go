package main

import (
	"fmt"
	"io"
	"strings"
)

// mountLogf returns the mount's log function: one line on w, prefixed
// "dj mount: " once (fusefs's messages carry the prefix already).
func mountLogf(w io.Writer) func(format string, args ...any) {
	return func(format string, args ...any) {
		msg := strings.TrimSuffix(fmt.Sprintf(format, args...), "\n")
		fmt.Fprintln(w, "dj mount: "+strings.TrimPrefix(msg, "dj mount: "))
	}
}
