// Package arch_test enforces the architecture: decision packages stay free of PostgreSQL, cgo and HTTP,
// dependencies point downwards, and every package and exported name is documented.
package arch_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/test/harness"
)

const module = "github.com/iotauth/iotauth"

type pkg struct {
	ImportPath string
	Dir        string
	Name       string
	Imports    []string
	Deps       []string
	CgoFiles   []string
	GoFiles    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// Pure decision packages must not reach PostgreSQL, cgo or HTTP even indirectly: they are tested with
// `go test` alone and reused on both sides.
var pure = []string{
	"plugin/engine", "plugin/engine/batch", "plugin/session", "plugin/budget", "plugin/keyset", "plugin/denylist",
	"plugin/acl", "plugin/auth", "plugin/options", "plugin/logq", "plugin/legacy", "plugin/presence", "backend/legacyimport",
	"backend/core/credential", "backend/core/secret", "backend/core/passhash", "backend/core/uuid", "backend/core/topicfilter", "cache",
}

// Packages below the plugin's main must not import cgo or net/http directly. plugin/pgstore adapts the
// store to the engine's interfaces: the engine reaches PostgreSQL only through it.
var noCgoNoHTTP = []string{"backend/store", "backend/migrations", "backend/view", "plugin/pgstore"}

// The plugin's instrumentation may serve HTTP (its /metrics) but never reaches PostgreSQL: it counts
// what the decision packages report, and only the plugin's main wires it in. (It uses no cgo of its
// own: the check below all packages covers that.)
var instrumentation = []string{"plugin/metrics"}

func TestDependencyRules(t *testing.T) {
	// Decision packages report figures through their own counters and small hooks; only the
	// instrumentation package knows Prometheus.
	forbidden := []string{"github.com/jackc/pgx", "net/http", "runtime/cgo", "github.com/prometheus"}
	byPath := map[string]pkg{}
	for _, p := range listPackages(t) {
		byPath[strings.TrimPrefix(p.ImportPath, module+"/")] = p
	}
	for _, name := range pure {
		p, ok := byPath[name]
		if !ok {
			t.Fatalf("package %s not found", name)
		}
		for _, d := range p.Deps {
			for _, f := range forbidden {
				if strings.HasPrefix(d, f) {
					t.Errorf("%s depends on %s; decision packages must stay pure", name, d)
				}
			}
		}
		if len(p.CgoFiles) > 0 {
			t.Errorf("%s uses cgo", name)
		}
	}
	for _, name := range instrumentation {
		p, ok := byPath[name]
		if !ok {
			t.Fatalf("package %s not found", name)
		}
		for _, d := range p.Deps {
			if strings.HasPrefix(d, "github.com/jackc/pgx") {
				t.Errorf("%s depends on %s; instrumentation must not reach PostgreSQL", name, d)
			}
		}
	}
	for _, name := range noCgoNoHTTP {
		p := byPath[name]
		for _, imp := range p.Imports {
			if imp == "C" || imp == "net/http" {
				t.Errorf("%s imports %s directly", name, imp)
			}
		}
		if len(p.CgoFiles) > 0 {
			t.Errorf("%s uses cgo", name)
		}
	}
	// Nothing but the plugin's main package uses cgo (and the benchmark's floor plugin, a Go .so that
	// answers every connect at once to measure the cost of entering Go; it ships in no package).
	for path, p := range byPath {
		if len(p.CgoFiles) > 0 && path != "plugin" && path != "test/bench/floor" {
			t.Errorf("%s uses cgo; only plugin/ (the .so) may", path)
		}
		// Lower layers never import the top.
		if strings.HasPrefix(path, "backend/") || path == "cache" {
			for _, imp := range p.Imports {
				if strings.HasPrefix(imp, module+"/plugin") || strings.HasPrefix(imp, module+"/cmd") {
					t.Errorf("%s (a lower layer) imports %s", path, imp)
				}
			}
		}
	}
}

// The management services (backend/service/...) sit below the front ends (the REST API, the CLI, the
// console) and above the store: they import the store and the shared packages, never HTTP (not even
// indirectly), a front end or the plugin; within backend/ only the REST API imports them; and each
// domain service stands alone, sharing only the service package's errors and actor.
func TestServiceLayer(t *testing.T) {
	const svc = "backend/service"
	isService := func(path string) bool { return path == svc || strings.HasPrefix(path, svc+"/") }
	services := 0
	for _, p := range listPackages(t) {
		path := strings.TrimPrefix(p.ImportPath, module+"/")
		if isService(path) && !strings.HasSuffix(path, "_test") {
			services++
			for _, d := range p.Deps {
				dep := strings.TrimPrefix(d, module+"/")
				switch {
				case d == "net/http", strings.HasPrefix(d, "net/http/"):
					t.Errorf("%s depends on %s; services do not speak HTTP (the REST API translates)", path, d)
				case dep == "backend/api" || strings.HasPrefix(dep, "backend/api/") || strings.HasPrefix(dep, "cmd/") ||
					strings.HasPrefix(dep, "web/") || dep == "plugin" || strings.HasPrefix(dep, "plugin/"):
					t.Errorf("%s depends on %s; a service sits below the front ends", path, d)
				}
			}
			for _, imp := range p.Imports {
				dep := strings.TrimPrefix(imp, module+"/")
				if path != svc && isService(dep) && dep != svc {
					t.Errorf("%s imports %s; domain services share only %s", path, imp, svc)
				}
			}
			continue
		}
		if strings.HasPrefix(path, "backend/") && path != "backend/api" {
			for _, imp := range p.Imports {
				if isService(strings.TrimPrefix(imp, module+"/")) {
					t.Errorf("%s imports %s; below the REST API only the services themselves may", path, imp)
				}
			}
		}
	}
	if services < 4 {
		t.Fatalf("found %d service packages under %s, want the shared one and keys, users, agents", services, svc)
	}
}

func TestEverythingDocumented(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.HasSuffix(p.ImportPath, "_test") {
			continue
		}
		if len(p.GoFiles)+len(p.CgoFiles) == 0 {
			continue // a package of tests only
		}
		fset := token.NewFileSet()
		hasDoc := false
		for _, name := range append(p.GoFiles, p.CgoFiles...) {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if f.Doc != nil && len(strings.TrimSpace(f.Doc.Text())) > 0 {
				hasDoc = true
			}
			checkExported(t, fset, f)
		}
		if !hasDoc {
			t.Errorf("package %s has no package doc comment", p.ImportPath)
		}
	}
}

func checkExported(t *testing.T, fset *token.FileSet, f *ast.File) {
	t.Helper()
	where := func(n ast.Node) string {
		pos := fset.Position(n.Pos())
		return fmt.Sprintf("%s/%s:%d", filepath.Base(filepath.Dir(pos.Filename)), filepath.Base(pos.Filename), pos.Line)
	}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Name.IsExported() && d.Doc == nil && (d.Recv == nil || receiverExported(d.Recv)) {
				t.Errorf("%s: exported %s has no doc comment", where(d), d.Name.Name)
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					if s.Name.IsExported() && d.Doc == nil && s.Doc == nil {
						t.Errorf("%s: exported type %s has no doc comment", where(s), s.Name.Name)
					}
				case *ast.ValueSpec:
					for _, n := range s.Names {
						if n.IsExported() && d.Doc == nil && s.Doc == nil && s.Comment == nil {
							t.Errorf("%s: exported %s has no doc comment", where(s), n.Name)
						}
					}
				}
			}
		}
	}
}

func receiverExported(fl *ast.FieldList) bool {
	if len(fl.List) == 0 {
		return false
	}
	typ := fl.List[0].Type
	if s, ok := typ.(*ast.StarExpr); ok {
		typ = s.X
	}
	if ix, ok := typ.(*ast.IndexExpr); ok {
		typ = ix.X
	}
	if ix, ok := typ.(*ast.IndexListExpr); ok {
		typ = ix.X
	}
	id, ok := typ.(*ast.Ident)
	return ok && id.IsExported()
}
