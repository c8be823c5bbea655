package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// dj options lists every -o key with its help, as restic's options
// command; --json as a list of key and help.
func TestOptionsCommand(t *testing.T) {
	withoutPasswordEnv(t)
	out, errOut, code := runDJ(t, "", "options")
	if code != 0 || errOut != "" {
		t.Fatalf("options: exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != "All Extended Options:" || len(lines) != len(extendedOptions())+1 {
		t.Fatalf("options output:\n%s", out)
	}
	for _, key := range []string{"connections", "sftp.command", "sftp.args", "sftp.connections", "rest.connections"} {
		found := false
		for _, l := range lines[1:] {
			if f := strings.Fields(l); len(f) > 1 && f[0] == key {
				found = true
			}
		}
		if !found {
			t.Errorf("no line for %s with its help:\n%s", key, out)
		}
	}

	out, _, code = runDJ(t, "", "options", "--json")
	var list []optionJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 || len(list) != len(extendedOptions()) || list[0].Key == "" || list[0].Help == "" {
		t.Fatalf("options --json: exit %d, %v\n%s", code, err, out)
	}

	if _, errOut, code := runDJ(t, "", "options", "extra"); code != 1 || !strings.Contains(errOut, "takes no arguments") {
		t.Errorf("options extra: exit %d, stderr %q", code, errOut)
	}
}
