//go:build bench

package main

import (
	"math"
	"testing"
)

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	for _, tc := range []struct {
		name    string
		buckets map[float64]float64
		q, want float64
	}{
		{"inside the first bucket", map[float64]float64{0.1: 100, 1: 100, inf: 100}, 0.99, 0.099},
		{"inside a later bucket", map[float64]float64{0.1: 50, 1: 150, inf: 150}, 0.5, 0.325},
		{"beyond the last bound", map[float64]float64{0.1: 10, 1: 10, inf: 100}, 0.99, 1},
	} {
		got, err := histogramQuantile(tc.q, tc.buckets)
		if err != nil || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: got %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := histogramQuantile(0.99, map[float64]float64{inf: 0}); err == nil {
		t.Error("an empty histogram gave a quantile")
	}
}
