package mem_test

import (
	"testing"

	"dj/backend"
	"dj/backend/conformance"
	"dj/backend/mem"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) backend.Backend { return mem.New() })
}
