package arch_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/test/harness"
)

// maxStoreMethods bounds the methods of any one type in backend/store: the queries are split by domain
// into fields of store.Store (docs/store.md), so that a consumer takes the domain it needs.
const maxStoreMethods = 25

// TestStoreTypesStaySmall counts, for every type of backend/store, the methods it declares plus the
// exported ones its embedded fields promote (one level, which is all the package uses; the shared
// core's unexported transaction helpers are not part of any type's surface), and fails on a type above
// maxStoreMethods: a domain embedded back into Store, or one domain grown too wide, shows up here.
func TestStoreTypesStaySmall(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	paths, err := filepath.Glob(filepath.Join(root, "backend", "store", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]int{}    // type → methods it declares
	exported := map[string]int{}    // type → exported methods it declares
	embeds := map[string][]string{} // struct type → the types it embeds
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		{
			for _, d := range f.Decls {
				switch d := d.(type) {
				case *ast.FuncDecl:
					if d.Recv != nil && len(d.Recv.List) == 1 {
						declared[typeName(d.Recv.List[0].Type)]++
						if d.Name.IsExported() {
							exported[typeName(d.Recv.List[0].Type)]++
						}
					}
				case *ast.GenDecl:
					for _, s := range d.Specs {
						ts, ok := s.(*ast.TypeSpec)
						if !ok {
							continue
						}
						st, ok := ts.Type.(*ast.StructType)
						if !ok {
							continue
						}
						for _, fld := range st.Fields.List {
							if len(fld.Names) == 0 {
								embeds[ts.Name.Name] = append(embeds[ts.Name.Name], typeName(fld.Type))
							}
						}
					}
				}
			}
		}
	}
	if declared["Store"] == 0 {
		t.Fatal("found no method of store.Store in backend/store: has the package moved? Update this test")
	}
	types := map[string]bool{}
	for n := range declared {
		types[n] = true
	}
	for n := range embeds {
		types[n] = true
	}
	var names []string
	for n := range types {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		total := declared[n]
		for _, e := range embeds[n] {
			total += exported[e]
		}
		if total > maxStoreMethods {
			t.Errorf("store.%s has %d methods (declared, and exported ones promoted from %v), more than %d: split it by domain into a field of its own (docs/store.md)",
				n, total, embeds[n], maxStoreMethods)
		}
	}
}

// typeName is the name of a receiver's or an embedded field's type: T, *T, pkg.T → T.
func typeName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return typeName(e.X)
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.Ident:
		return e.Name
	case *ast.IndexExpr:
		return typeName(e.X)
	}
	return ""
}
