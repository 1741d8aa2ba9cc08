package errors_test

import (
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// exported returns the exported top-level names declared in the non-test Go
// files of dir, each with the kind of its declaration (func, var, const,
// type).
func exported(t *testing.T, dir string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	names := map[string]string{}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.IsExported() {
					names[d.Name.Name] = "func"
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.ValueSpec:
						for _, id := range s.Names {
							if id.IsExported() {
								names[id.Name] = d.Tok.String()
							}
						}
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							names[s.Name.Name] = "type"
						}
					}
				}
			}
		}
	}
	return names
}

// TestDropInExportsAllOfStandardErrors pins that the package re-exports every
// exported name of the standard errors package of the Go that builds it, as
// the same kind of declaration, so code that imports it in place of the
// standard package keeps compiling when Go adds to errors (as Go 1.26 did
// with AsType).
func TestDropInExportsAllOfStandardErrors(t *testing.T) {
	pkg, err := build.Import("errors", "", build.FindOnly)
	require.NoError(t, err, "finding the standard errors package's source")
	std := exported(t, pkg.Dir)
	require.NotEmpty(t, std, "no exported names found in the standard errors package")
	require.Contains(t, std, "Is", "the standard errors package was not parsed")
	ours := exported(t, ".")
	for name, kind := range std {
		if assert.Contains(t, ours, name, "errors.%s of the standard library is missing", name) {
			assert.Equal(t, kind, ours[name], "errors.%s is a %s in the standard library", name, kind)
		}
	}
}
