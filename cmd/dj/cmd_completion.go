package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// completionFlag is what the completion scripts append to the words typed
// so far to ask dj for candidates; a word being typed that starts with "-"
// comes right before it.
const completionFlag = "--generate-bash-completion"

const bashCompletion = `# bash completion for dj; load with: source <(dj completion bash)
_dj_complete() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  if [[ "$cur" == -* ]]; then
    COMPREPLY=( $(compgen -W "$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)" -- "$cur") )
  else
    COMPREPLY=( $(compgen -W "$("${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur") )
  fi
  [[ ${#COMPREPLY[@]} -eq 0 ]] && COMPREPLY=( $(compgen -f -- "$cur") )
  return 0
}
complete -o default -F _dj_complete dj
`

const zshCompletion = `#compdef dj
# zsh completion for dj; load with: source <(dj completion zsh)
_dj() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _dj dj
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		UsageText: "dj completion bash|zsh|fish",
		Description: `Example:
   source <(dj completion bash)
   dj completion fish > ~/.config/fish/completions/dj.fish`,
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				_, err := fmt.Fprint(c.App.Writer, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(c.App.Writer, zshCompletion)
				return err
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(c.App.Writer, s)
				return err
			}
			return usageError("completion needs a shell: bash, zsh or fish")
		},
	}
}

// complete prints the candidates for the next word after words (the
// arguments typed so far, without the program name), one per line, as the
// completion scripts ask with completionFlag. It follows the command tree
// itself rather than urfave/cli's parser, so flags complete after
// positional arguments (dj reorders interspersed flags) and nothing but
// candidates is ever printed: no errors, no help.
func complete(app *cli.App, words []string, w io.Writer) {
	defer func() { _ = recover() }() // a completion never fails loudly
	partial, hasPartial := "", false
	if n := len(words); n > 0 && strings.HasPrefix(words[n-1], "-") {
		partial, hasPartial = words[n-1], true
		words = words[:n-1]
	}
	var cmd *cli.Command
	cmds, flags := app.Commands, app.Flags
	valueFlags := takesValue(flags)
	used := map[string]bool{}
	positionals, awaitingValue := 0, false
	for i := 0; i < len(words); i++ {
		a := words[i]
		if a == "--" {
			return // only positional arguments follow
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			used[flagName(a)] = true
			if needsValue(a, valueFlags) {
				if i+1 < len(words) {
					i++
				} else {
					awaitingValue = true
				}
			}
			continue
		}
		if cmd == nil && positionals == 0 && a == "help" {
			continue // `dj help COMMAND...` completes like the command path
		}
		if positionals == 0 {
			if c := findCommand(cmds, a); c != nil {
				cmd, cmds = c, c.Subcommands
				flags = append(append([]cli.Flag{}, c.Flags...), app.Flags...)
				valueFlags = takesValue(flags)
				continue
			}
		}
		positionals++
	}
	if awaitingValue {
		return // a flag's value: the shell completes file names
	}
	if hasPartial {
		for _, cand := range flagCandidates(flags, used, cmd == nil) {
			if strings.HasPrefix(cand, partial) && !(strings.HasPrefix(partial, "--") && !strings.HasPrefix(cand, "--")) {
				fmt.Fprintln(w, cand)
			}
		}
		return
	}
	if positionals > 0 {
		return
	}
	if cmd == nil || len(cmd.Subcommands) > 0 {
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			for _, n := range c.Names() {
				fmt.Fprintln(w, n)
			}
		}
		return
	}
	for _, word := range firstArgWords(cmd.Name) {
		fmt.Fprintln(w, word)
	}
}

// flagCandidates lists the spellings of flags ("--name", "-n") that may
// still be given: flags already used are left out unless they repeat.
func flagCandidates(flags []cli.Flag, used map[string]bool, top bool) []string {
	var out []string
	for _, f := range flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		if repeatable := isSliceFlag(f); !repeatable {
			given := false
			for _, n := range f.Names() {
				given = given || used[n]
			}
			if given {
				continue
			}
		}
		for _, n := range f.Names() {
			if len(n) == 1 {
				out = append(out, "-"+n)
			} else {
				out = append(out, "--"+n)
			}
		}
	}
	out = append(out, "--help")
	if top {
		out = append(out, "--version")
	}
	return out
}

func isSliceFlag(f cli.Flag) bool {
	switch f.(type) {
	case *cli.StringSliceFlag, *cli.IntSliceFlag, *cli.Int64SliceFlag, *cli.UintSliceFlag, *cli.Uint64SliceFlag, *cli.Float64SliceFlag:
		return true
	}
	return false
}

// firstArgWords are the words a command's first argument can be, for
// commands that take a kind of object.
func firstArgWords(command string) []string {
	switch command {
	case "completion":
		return []string{"bash", "zsh", "fish"}
	case "list":
		return listTypes()
	case "cat":
		return []string{"config", "index", "snapshot", "key", "lock", "tree", "blob", "pack"}
	}
	return nil
}
