package console

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"sort"
	"strings"
	"testing"
)

// maxMethods is how many methods one of the console's types may declare: each screen is its own type
// (docs/architecture.md), so a screen that outgrows this is split rather than grown.
const maxMethods = 25

// methodCounts counts the methods each type declares in the Go files of dir (test files left out).
func methodCounts(t *testing.T, dir string) map[string]int {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, dir+"/"+name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || len(fn.Recv.List) == 0 {
				continue
			}
			typ := fn.Recv.List[0].Type
			if star, ok := typ.(*ast.StarExpr); ok {
				typ = star.X
			}
			if id, ok := typ.(*ast.Ident); ok {
				counts[id.Name]++
			}
		}
	}
	return counts
}

func TestNoTypeHasTooManyMethods(t *testing.T) {
	counts := methodCounts(t, ".")
	if counts["Console"] == 0 {
		t.Fatalf("method counts %v: the parse did not find the Console type's methods", counts)
	}
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if counts[n] > maxMethods {
			t.Errorf("%s declares %d methods (at most %d): split it by screen or concern", n, counts[n], maxMethods)
		}
	}
}
