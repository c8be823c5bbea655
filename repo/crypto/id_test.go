package crypto

import (
	"encoding/json"
	"testing"
)

func TestIDJSON(t *testing.T) {
	id := Hash([]byte("x"))
	b, err := json.Marshal(id)
	if err != nil || string(b) != `"`+id.String()+`"` {
		t.Fatalf("marshal: %s %v", b, err)
	}
	var got ID
	if err := json.Unmarshal(b, &got); err != nil || got != id {
		t.Fatalf("unmarshal: %v", err)
	}
	for _, bad := range []string{`"zz"`, `"` + id.String()[:63] + `g"`, `12`, `"` + id.String() + `0"`, `null`} {
		var x ID
		if err := json.Unmarshal([]byte(bad), &x); err == nil && bad != "null" {
			t.Errorf("%s accepted", bad)
		}
	}
}
