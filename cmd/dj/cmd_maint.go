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
