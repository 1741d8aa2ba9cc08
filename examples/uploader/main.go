// Uploader sends files and form fields to the demo API's upload endpoint:
// several files in one field, several fields, a generated stream, with a
// progress callback. The API's token expires after every upload, so each
// one is sent twice in full: the first attempt gets 401, the replay after
// the refresh succeeds, byte for byte.
//
//	go run ./examples/uploader [FILE...]
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/requests"
	"github.com/courier-go/courier/upload"
)

func main() {
	if err := run(context.Background(), os.Stdout, os.Args[1:]); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, w io.Writer, files []string) error {
	if len(files) == 0 {
		// No files given: make two.
		dir, err := os.MkdirTemp("", "courier-uploader-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		for i, size := range []int{300 << 10, 2 << 20} {
			p := filepath.Join(dir, fmt.Sprintf("photo-%d.jpg", i))
			data := make([]byte, size)
			seed := [32]byte{byte(i)}
			rand.NewChaCha8(seed).Read(data)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				return err
			}
			files = append(files, p)
		}
	}

	api, err := demo.Start("127.0.0.1:0", demo.Config{AccessUses: 1})
	if err != nil {
		return err
	}
	defer api.Close()
	tk := api.Login()
	e, err := engine.New(engine.Config{BaseURL: api.URL, Auth: engine.Auth{
		AccessToken: "expired", RefreshToken: tk.RefreshToken,
		Refresh: &engine.RefreshConfig{Path: "/auth/refresh"},
	}})
	if err != nil {
		return err
	}
	defer e.Close()

	const streamSize = 1 << 20
	var b upload.Builder
	body, err := b.
		Field("album", "holiday").
		File("photos", files...).
		Reader("log", "generated.txt", streamSize, "text/plain", func() (io.ReadCloser, error) {
			return io.NopCloser(io.LimitReader(rand.NewChaCha8([32]byte{42}), streamSize)), nil
		}).
		Progress(func(sent, total int64) {
			if sent == total {
				fmt.Fprintf(w, "  sent %d of %d bytes\n", sent, total)
			}
		}).
		Build()
	if err != nil {
		return err // names any file that is missing or unreadable
	}
	resp, err := e.Upload(ctx, "/upload", body)
	if err != nil {
		return err
	}
	ans, err := requests.Decode[demo.UploadAnswer](resp)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "uploaded in %d attempts (%d refresh), Content-Length %d:\n", resp.Attempts, e.Stats().Refreshes, ans.ContentLength)
	for i, p := range ans.Parts {
		check := ""
		if i >= 1 && i <= len(files) {
			if sum, err := fileSum(files[i-1]); err == nil && sum == p.SHA256 {
				check = " (checksum matches)"
			}
		}
		fmt.Fprintf(w, "  %-7s %-16s %-24s %8d bytes%s\n", p.Field, p.Filename, p.ContentType, p.Size, check)
	}
	return nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
