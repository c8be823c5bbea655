package rest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/mem"
	"dj/backend/rest"
)

// TestServerSilentUploadFreesSlot: an upload whose client goes silent
// mid-body ends after UploadIdleTimeout and gives its slot back, so that
// clients on a flaky network cannot wedge the server for everyone.
func TestServerSilentUploadFreesSlot(t *testing.T) {
	be := mem.New()
	if err := be.Save(context.Background(), backend.Handle{Type: backend.ConfigFile}, []byte("config")); err != nil {
		t.Fatal(err)
	}
	u := serve(t, be, rest.ServerOptions{MaxUploads: 1, UploadIdleTimeout: 200 * time.Millisecond})
	pu, _ := url.Parse(u)
	silent, err := net.Dial("tcp", pu.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	name := "00" + fmt.Sprintf("%062d", 0)
	fmt.Fprintf(silent, "POST %sdata/%s HTTP/1.1\r\nHost: %s\r\nContent-Length: 100000\r\n\r\n0123456789", pu.Path, name, pu.Host)
	time.Sleep(50 * time.Millisecond) // the silent upload takes the only slot

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rest.Open(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a file")
	sum := sha256.Sum256(data)
	start := time.Now()
	if err := c.Save(ctx, backend.Handle{Type: backend.PackFile, Name: hex.EncodeToString(sum[:])}, data); err != nil {
		t.Fatalf("save while a silent upload holds the slot: %v (after %v)", err, time.Since(start))
	}
}
