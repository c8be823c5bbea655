package main

import (
	"io"
	"sort"

	"github.com/urfave/cli/v2"
)

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "dj",
		Usage:                "deduplicating, encrypted, compressed backups you can mount",
		Version:              version,
		Reader:               stdin,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		// Flag values are never split at commas by the flag parser: an
		// exclude pattern may hold a comma, and a --tag filter "a,b" means
		// "both a and b" (restic's tag lists). Commands that take
		// comma-separated lists split them themselves (splitTags).
		DisableSliceFlagSeparator: true,
		HideHelpCommand:           true,
		Description: `dj backs up directories into a repository (a local directory, or a 'dj serve'
REST server: -r rest:http://host:port/), deduplicated, compressed and encrypted,
and shows every snapshot as an ordinary directory tree with 'dj mount'.

Example:
   export DJ_REPOSITORY=/srv/backup DJ_PASSWORD_FILE=~/.dj-password
   dj init
   dj backup ~/documents
   dj snapshots
   dj mount /mnt/backup`,
		Flags:          globalFlags(),
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			initCommand(), backupCommand(), snapshotsCommand(), lsCommand(), restoreCommand(),
			dumpCommand(), catCommand(), keyCommand(), unlockCommand(), mountCommand(), mapCommand(), unmapCommand(), pveCommand(),
			versionCommand(), completionCommand(), serveCommand(),
		},
	}
	app.Commands = append(app.Commands, maintenanceCommands()...)
	app.Commands = append(app.Commands, copyCommand(), tagCommand(), rewriteCommand(), listCommand(), findFilesCommand())
	app.Commands = append(app.Commands, optionsCommand())
	app.Commands = append(app.Commands, cacheCommand())
	sort.Sort(cli.CommandsByName(app.Commands))
	return app
}
