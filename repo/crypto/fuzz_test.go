package crypto

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzOpen: Open never panics, accepts only what Seal made with the same
// key and associated data, and gives back exactly what was sealed.
func FuzzOpen(f *testing.F) {
	k, err := NewRandomKey()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(k.Seal(nil, []byte("secret"), []byte("index")), []byte("index"))
	f.Add(k.Seal(nil, nil, nil), []byte{})
	f.Add([]byte{1, 2, 3}, []byte("data"))
	f.Fuzz(func(t *testing.T, sealed, ad []byte) {
		plain, err := k.Open(nil, sealed, ad)
		if err != nil {
			return
		}
		// Only a real seal opens; sealing its plaintext again must open
		// to the same bytes.
		if again, err := k.Open(nil, k.Seal(nil, plain, ad), ad); err != nil || !bytes.Equal(again, plain) {
			t.Fatalf("round trip of opened bytes: %v", err)
		}
	})
}

// FuzzKeyFile: a key file from storage is decoded and opened without
// panicking, and parameters that would make argon2 allocate or work
// without bound are refused before the KDF runs (the fuzzer only opens
// files whose parameters are as cheap as TestKDF; the check runs first
// for all of them).
func FuzzKeyFile(f *testing.F) {
	master, err := NewRandomKey()
	if err != nil {
		f.Fatal(err)
	}
	kf, err := NewKeyFile(master, "pw", TestKDF, "u", "h")
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(kf)
	f.Add(good)
	f.Add([]byte(`{"kdf":"argon2id","time":1,"memory":4194304,"threads":1,"salt":"AAAAAAAAAAA=","data":""}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		kf, err := ParseKeyFile(b)
		if err != nil {
			return
		}
		if kf.Time > TestKDF.Time || kf.Memory > TestKDF.Memory || kf.Threads > 4 {
			return // real work for argon2; TestKeyFileRefusesCostlyKDF covers the bounds
		}
		if k, err := kf.Open("pw"); err == nil && k == nil {
			t.Fatal("no key and no error")
		}
	})
}
