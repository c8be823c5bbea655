//go:build cgo

package repo

import "testing"

// TestDefaultEncoderIsC: where the build has cgo, the default level is the
// C library's (the faster one), so that a build that silently lost it
// fails here.
func TestDefaultEncoderIsC(t *testing.T) {
	enc, err := newEncoder("auto")
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	if _, ok := enc.(*cEncoder); !ok {
		t.Fatalf("default encoder is %T, want *cEncoder", enc)
	}
}
