package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// optionJSON is one extended option in `dj options --json`.
type optionJSON struct {
	Key  string `json:"key"`
	Help string `json:"help"`
}

func optionsCommand() *cli.Command {
	return &cli.Command{
		Name:      "options",
		Usage:     "list the extended options that -o KEY=VALUE accepts",
		UsageText: "dj options [--json]",
		Description: `Lists every extended option of every kind of repository with what it
does, as restic's options command. An option for another kind of repository
than the one opened is accepted and ignored.

Examples:
   dj options
   dj -r sftp:user@host:/srv/backup -o sftp.connections=8 backup ~/documents`,
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			if c.NArg() != 0 {
				return usageError("options takes no arguments")
			}
			opts := extendedOptions()
			if e.json {
				list := make([]optionJSON, 0, len(opts))
				for _, o := range opts {
					list = append(list, optionJSON{Key: o.key, Help: o.help})
				}
				return e.printJSON(list)
			}
			fmt.Fprintln(e.stdout, "All Extended Options:")
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
			for _, o := range opts {
				fmt.Fprintf(tw, "  %s\t%s\n", o.key, o.help)
			}
			return tw.Flush()
		},
	}
}
