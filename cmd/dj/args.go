package main

import (
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed reorders args so that flags given after positional arguments
// ("dj restore latest --target DIR") come before them, since urfave/cli
// stops parsing flags at the first positional argument. Everything after
// "--" stays as it is.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	// Global flags before the command.
	valueFlags := takesValue(app.Flags)
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
		if v, ok := verboseArgs(args[i]); ok {
			out = append(out, v...)
			i++
			continue
		}
		out = append(out, args[i])
		if needsValue(args[i], valueFlags) && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
		i++
	}
	cmds := app.Commands
	var cmd *cli.Command
	cmdStart := -1 // where the top-level command is in out
	for i < len(args) {
		cmd = findCommand(cmds, args[i])
		if cmd == nil {
			break
		}
		if cmdStart < 0 {
			cmdStart = len(out)
		}
		out = append(out, args[i])
		i++
		if len(cmd.Subcommands) == 0 {
			break
		}
		cmds = cmd.Subcommands
	}
	if cmd == nil || i >= len(args) {
		return append(out, args[i:]...)
	}
	valueFlags = takesValue(append(append([]cli.Flag{}, cmd.Flags...), app.Flags...))
	cmdNames := flagNames(cmd.Flags)
	globalNames := flagNames(app.Flags)
	var globals, flags, positional []string
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i:]...)
			break
		}
		if v, ok := verboseArgs(a); ok && !cmdNames[flagName(a)] {
			globals = append(globals, v...)
			continue
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			dst := &flags
			// A global flag after the command ("dj snapshots --json") goes
			// before it, where urfave/cli looks for it.
			if n := flagName(a); !cmdNames[n] && globalNames[n] {
				dst = &globals
			}
			*dst = append(*dst, a)
			if needsValue(a, valueFlags) && i+1 < len(args) {
				i++
				*dst = append(*dst, args[i])
			}
			continue
		}
		positional = append(positional, a)
	}
	unifySpellings(flags, valueFlags, cmd.Flags, app.Flags)
	res := append(append(append([]string{}, out[:cmdStart]...), globals...), out[cmdStart:]...)
	res = append(res, flags...)
	return append(res, positional...)
}

func flagName(arg string) string {
	name := strings.TrimLeft(arg, "-")
	if k, _, ok := strings.Cut(name, "="); ok {
		return k
	}
	return name
}

// unifySpellings rewrites, in args (flags and their values), every flag
// given in more than one spelling by its name: urfave/cli refuses a command
// line that uses two spellings of one flag ("-e a --exclude b"), restic
// accepts it.
func unifySpellings(args []string, valueFlags map[string]bool, sets ...[]cli.Flag) {
	spellings := map[string]map[string]bool{}
	var at []int // indexes of flags (not of their values)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue
		}
		at = append(at, i)
		c := flagName(canonicalFlag(a, sets...))
		if spellings[c] == nil {
			spellings[c] = map[string]bool{}
		}
		spellings[c][flagName(a)] = true
		if needsValue(a, valueFlags) {
			i++
		}
	}
	for _, i := range at {
		c := canonicalFlag(args[i], sets...)
		if len(spellings[flagName(c)]) > 1 {
			args[i] = c
		}
	}
}

// canonicalFlag spells a flag given by an alias ("-e PATTERN") by its
// name ("--exclude PATTERN"): urfave/cli refuses a command line that uses
// two spellings of one flag ("-e a --exclude b"), restic accepts it. The
// first flag set that knows the name wins (the command's before the
// global ones).
func canonicalFlag(arg string, sets ...[]cli.Flag) string {
	name := flagName(arg)
	for _, flags := range sets {
		for _, f := range flags {
			names := f.Names()
			if !slices.Contains(names, name) {
				continue
			}
			if names[0] == name {
				return arg
			}
			rest := ""
			if _, v, ok := strings.Cut(strings.TrimLeft(arg, "-"), "="); ok {
				rest = "=" + v
			}
			return "--" + names[0] + rest
		}
	}
	return arg
}

func flagNames(flags []cli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		for _, n := range f.Names() {
			m[n] = true
		}
	}
	return m
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name {
			return c
		}
		for _, a := range c.Aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

// takesValue lists the names of flags that take a value.
func takesValue(flags []cli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		if _, isBool := f.(*cli.BoolFlag); isBool {
			continue
		}
		for _, n := range f.Names() {
			m[n] = true
		}
	}
	return m
}

func needsValue(arg string, valueFlags map[string]bool) bool {
	name := strings.TrimLeft(arg, "-")
	if strings.Contains(name, "=") {
		return false
	}
	return valueFlags[name]
}

// danglingValueFlag returns the last argument when it is a flag of the
// command that needs a value and has none ("dj restore latest --target"),
// with the command's path ("restore"). Left to the reordering, such a flag
// would take the positional argument before it as its value.
func danglingValueFlag(app *cli.App, args []string) (flag, path string) {
	if len(args) < 3 {
		return "", ""
	}
	last := args[len(args)-1]
	if !strings.HasPrefix(last, "-") || last == "-" || last == "--" {
		return "", ""
	}
	cmds := app.Commands
	var cmd *cli.Command
	var names []string
	valueFlags := takesValue(app.Flags)
	for i := 1; i < len(args)-1; i++ {
		a := args[i]
		if a == "--" {
			return "", ""
		}
		if strings.HasPrefix(a, "-") {
			if needsValue(a, valueFlags) {
				i++
			}
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			if cmd == nil {
				return "", ""
			}
			continue
		}
		cmd, cmds = c, c.Subcommands
		names = append(names, c.Name)
		valueFlags = takesValue(append(append([]cli.Flag{}, c.Flags...), app.Flags...))
	}
	if cmd == nil || !needsValue(last, valueFlags) {
		return "", ""
	}
	return last, strings.Join(names, " ")
}

// verboseArgs spells the counted global flag -v ("-vv", "--verbose=2",
// "--verbose") as that many "-v", the one form urfave/cli counts (it
// refuses two spellings of one flag in one command line); ok is false for
// other arguments.
func verboseArgs(arg string) (v []string, ok bool) {
	if !strings.HasPrefix(arg, "-") {
		return nil, false
	}
	name, val, hasVal := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	n := 0
	switch {
	case (name == "verbose" || name == "v") && !hasVal:
		n = 1
	case name == "verbose" || name == "v":
		if k, err := strconv.Atoi(val); err == nil && k >= 0 {
			n = k
		} else if b, err := strconv.ParseBool(val); err == nil {
			if b {
				n = 1
			}
		} else {
			return nil, false
		}
	case !hasVal && !strings.HasPrefix(arg, "--") && name != "" && strings.Trim(name, "v") == "":
		n = len(name)
	default:
		return nil, false
	}
	return slices.Repeat([]string{"-v"}, n), true
}
