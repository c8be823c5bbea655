package main

import (
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
)

// guardUsage makes every mistake in how dj is called end in one line on
// stderr (exit 1) instead of urfave/cli's "Incorrect Usage" and a page of
// help on stdout: an unknown command or subcommand, a mistyped flag (with
// the nearest real one), a flag without its value. args are the arguments
// as the user typed them, to echo a flag the way it was written.
func guardUsage(app *cli.App, args []string) {
	app.OnUsageError = usageErrorHandler(app, args)
	app.Action = unknownCommandAction(app, nil)
	var walk func(cmds []*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, cmd := range cmds {
			cmd.OnUsageError = usageErrorHandler(app, args)
			if len(cmd.Subcommands) > 0 && cmd.Action == nil {
				cmd.Action = unknownCommandAction(app, cmd)
			}
			walk(cmd.Subcommands)
		}
	}
	walk(app.Commands)
}

// unknownCommandAction is the action of the app (cmd nil) or of a command
// that only groups subcommands: help without arguments, an error naming
// the unknown command otherwise.
func unknownCommandAction(app *cli.App, cmd *cli.Command) cli.ActionFunc {
	return func(c *cli.Context) error {
		if !c.Args().Present() {
			if cmd == nil {
				return cli.ShowAppHelp(c)
			}
			return cli.ShowSubcommandHelp(c)
		}
		name := c.Args().First()
		if cmd == nil && name == "help" {
			// `dj help [COMMAND...]`, as restic has it.
			return helpTopic(c, app, c.Args().Tail())
		}
		path, cmds := "dj", app.Commands
		if cmd != nil {
			path, cmds = "dj "+commandPath(c), cmd.Subcommands
		}
		var names []string
		for _, sub := range cmds {
			if !sub.Hidden && sub.Name != "help" {
				names = append(names, sub.Name)
			}
		}
		if strings.HasPrefix(name, "-") {
			return usageError("unknown flag %s (see %s --help)", name, path)
		}
		if near := nearest(name, names); near != "" {
			return usageError("unknown command %q: did you mean %q? (see %s --help)", strings.TrimPrefix(path+" "+name, "dj "), strings.TrimPrefix(path+" "+near, "dj "), path)
		}
		return usageError("unknown command %q (see %s --help)", strings.TrimPrefix(path+" "+name, "dj "), path)
	}
}

// helpTopic shows the help of the command named by words ("key add"), or
// of dj itself when words is empty.
func helpTopic(c *cli.Context, app *cli.App, words []string) error {
	if len(words) == 0 {
		return cli.ShowAppHelp(c)
	}
	cmds := app.Commands
	var cmd *cli.Command
	for i, w := range words {
		cmd = findCommand(cmds, w)
		if cmd == nil {
			return usageError("no help for %q: unknown command (see dj --help)", strings.Join(words[:i+1], " "))
		}
		cmds = cmd.Subcommands
	}
	// Show the help as `dj CMD --help` does, with the full command path.
	return app.RunContext(c.Context, append(append([]string{app.Name}, words...), "--help"))
}

// commandPath is the names of the commands from the app down to c's
// ("key add").
func commandPath(c *cli.Context) string {
	var names []string
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil && ctx.Command.Name != "" && ctx.Command.Name != ctx.App.Name {
			names = append(names, ctx.Command.Name)
		}
	}
	for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
		names[i], names[j] = names[j], names[i]
	}
	return strings.Join(names, " ")
}

var (
	undefinedFlagRE = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	missingValueRE  = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
	flagInErrRE     = regexp.MustCompile(`(for flag|flag:?) -+([A-Za-z0-9][-A-Za-z0-9]*)`)
)

// usageErrorHandler turns a flag parse error into one line that names the
// flag as typed, the nearest real flag, and where to read more.
func usageErrorHandler(app *cli.App, args []string) cli.OnUsageErrorFunc {
	return func(c *cli.Context, err error, _ bool) error {
		path := "dj"
		flags := append([]cli.Flag{}, app.Flags...)
		if p := commandPath(c); p != "" && c.Command != nil && c.Command.Name != app.Name {
			path = "dj " + p
			flags = append(append([]cli.Flag{}, c.Command.Flags...), app.Flags...)
		}
		msg := err.Error()
		if m := undefinedFlagRE.FindStringSubmatch(msg); m != nil {
			typed := typedFlag(args, m[1])
			if near := nearest(m[1], longFlagNames(flags)); near != "" {
				return usageError("unknown flag %s: did you mean --%s? (see %s --help)", typed, near, path)
			}
			return usageError("unknown flag %s (see %s --help)", typed, path)
		}
		if m := missingValueRE.FindStringSubmatch(msg); m != nil {
			return usageError("flag %s needs a value (see %s --help)", typedFlag(args, m[1]), path)
		}
		msg = flagInErrRE.ReplaceAllStringFunc(msg, func(s string) string {
			m := flagInErrRE.FindStringSubmatch(s)
			return m[1] + " " + typedFlag(args, m[2])
		})
		return usageError("%s (see %s --help)", msg, path)
	}
}

// typedFlag is the flag called name as the user wrote it ("-jsn" or
// "--jsn"), or its usual spelling when it cannot be found.
func typedFlag(args []string, name string) string {
	for _, a := range args {
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-") && flagName(a) == name {
			if k, _, ok := strings.Cut(a, "="); ok {
				return k
			}
			return a
		}
	}
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// longFlagNames lists the names of flags longer than one letter, without
// hidden flags.
func longFlagNames(flags []cli.Flag) []string {
	var out []string
	for _, f := range flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		for _, n := range f.Names() {
			if len(n) > 1 {
				out = append(out, n)
			}
		}
	}
	return out
}

// nearest returns the candidate closest to s: one that s is a prefix of
// (the shortest), or else the one with the smallest edit distance when that
// distance is small for the length of s. It returns "" when nothing is
// near.
func nearest(s string, candidates []string) string {
	best := ""
	for _, c := range candidates {
		if len(s) >= 2 && strings.HasPrefix(c, s) && (best == "" || len(c) < len(best)) {
			best = c
		}
	}
	if best != "" {
		return best
	}
	bestD := 0
	limit := 1 + len(s)/4
	if limit > 3 {
		limit = 3
	}
	for _, c := range candidates {
		if d := editDistance(s, c); d <= limit && (best == "" || d < bestD) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of neighbours
// each cost one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
