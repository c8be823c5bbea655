package main

import (
	"github.com/urfave/cli/v2"
)

// maintenanceCommands are the commands that check and maintain a
// repository, each in a file named after it (cmd_prune.go, cmd_forget.go, ...).
func maintenanceCommands() []*cli.Command {
	return []*cli.Command{forgetCommand(), pruneCommand(), diffCommand(), repackCommand(), checkCommand(), statsCommand(), repairCommand()}
}

// maintMemoryLimit is the soft memory limit of check, prune and repack:
// they hold a few whole packs at a time, and the index.
const maintMemoryLimit = 160 << 20

// verboseLogf is the Logf of maint's options: the lines are printed with
// --verbose and dropped without.
func (e *env) verboseLogf() func(format string, args ...any) {
	if !e.verbose {
		return nil
	}
	return e.printf
}
