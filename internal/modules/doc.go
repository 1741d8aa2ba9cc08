// Package modules holds no code. The repository is three Go modules: the
// library at the root, the courier command (cmd/courier) and the
// benchmarks (bench), tied together for development by the go.work file at
// the root. A pattern such as ./... stays inside one module, so the tests
// of this package are how `go test ./...` run from the root reaches the
// other two, and how the library's module graph is held to what the
// library imports.
package modules
