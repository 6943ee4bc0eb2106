package arch_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/test/harness"
)

// maxMethods bounds the methods any one type declares in the product's code (about 25 is the aim; a
// type past 30 holds more than one job and should be split, the way the REST API's handlers, the
// console's screens and the store's domains are). backend/store has a stricter test of its own that also
// counts promoted methods (storesize_test.go).
const maxMethods = 30

// stricterMethods lowers the bound for packages whose types are split by design: each console screen is
// its own type.
var stricterMethods = map[string]int{"web/console": 25}

// TestNoWideTypes counts the methods each type declares, per package, in every non-test Go file under
// backend, plugin, web, cmd and cache, and fails on a type above maxMethods.
func TestNoWideTypes(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	count := map[string]int{} // "dir.Type" → methods declared
	for _, top := range []string{"backend", "plugin", "web", "cmd", "cache"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if d.Name() == "node_modules" || d.Name() == "testdata" {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			for _, decl := range f.Decls {
				fn, ok := decl.(*ast.FuncDecl)
				if !ok || fn.Recv == nil || len(fn.Recv.List) == 0 {
					continue
				}
				if name := receiverType(fn.Recv.List[0].Type); name != "" {
					count[rel+"."+name]++
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(count) < 50 {
		t.Fatalf("found methods on only %d types: the walk missed the code", len(count))
	}
	for typ, n := range count {
		limit := maxMethods
		if l, ok := stricterMethods[typ[:strings.LastIndexByte(typ, '.')]]; ok {
			limit = l
		}
		if n > limit {
			t.Errorf("%s declares %d methods (at most %d): split it by job", typ, n, limit)
		}
	}
}

// receiverType is the name of a method's receiver type: T, *T, T[K] or *T[K, V].
func receiverType(e ast.Expr) string {
	for {
		switch x := e.(type) {
		case *ast.StarExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.IndexListExpr:
			e = x.X
		case *ast.Ident:
			return x.Name
		default:
			return ""
		}
	}
}
