package engine

import "testing"

// BenchmarkTokenSnapshot is what a worker pays to read the current token.
func BenchmarkTokenSnapshot(b *testing.B) {
	e, err := New(Config{BaseURL: "http://api.test", Auth: Auth{AccessToken: "t"}})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var n int
		for pb.Next() {
			n += len(e.tokens.Load().access)
		}
		_ = n
	})
}
