package backend

import (
	"context"
	"testing"
)

func TestPackKind(t *testing.T) {
	ctx := context.Background()
	if k := PackKindFrom(ctx); k != UnknownPack {
		t.Errorf("a bare context says %v", k)
	}
	for _, k := range []PackKind{DataPack, TreePack} {
		if got := PackKindFrom(WithPackKind(ctx, k)); got != k {
			t.Errorf("WithPackKind(%v) reads back as %v", k, got)
		}
	}
	// A decorator's derived context keeps the kind.
	c, cancel := context.WithCancel(WithPackKind(ctx, TreePack))
	defer cancel()
	if PackKindFrom(c) != TreePack {
		t.Errorf("a derived context lost the kind")
	}
}
