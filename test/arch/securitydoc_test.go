package arch_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/iotauth/iotauth/test/harness"
)

// provenBy matches one list of tests in docs/security.md and the package they live in:
// "`TestA`, `TestB` (backend/core/secret)".
var provenBy = regexp.MustCompile("((?:`(?:Test|Fuzz)\\w+`[,\\s]*(?:and\\s*)?)+)[^()`]*\\(([\\w/]+)\\)")

var testName = regexp.MustCompile("`((?:Test|Fuzz)\\w+)`")

var testFunc = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)\w+)\(`)

// TestSecurityDocNamesRealTests keeps docs/security.md honest: every test it names as the proof of a
// guarantee exists, in the package it names. A test that is renamed or moved fails here until the
// document follows.
func TestSecurityDocNamesRealTests(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]map[string]bool{} // package folder → test functions
	testsOf := func(dir string) map[string]bool {
		if m, ok := tests[dir]; ok {
			return m
		}
		m := map[string]bool{}
		files, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(dir), "*_test.go"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, sm := range testFunc.FindAllSubmatch(b, -1) {
				m[string(sm[1])] = true
			}
		}
		tests[dir] = m
		return m
	}
	placed := 0
	for _, m := range provenBy.FindAllStringSubmatch(string(doc), -1) {
		dir := m[2]
		for _, n := range testName.FindAllStringSubmatch(m[1], -1) {
			placed++
			if !testsOf(dir)[n[1]] {
				t.Errorf("docs/security.md names %s in %s, which has no such test: follow the rename or move", n[1], dir)
			}
		}
	}
	if all := len(testName.FindAllString(string(doc), -1)); all != placed {
		t.Errorf("docs/security.md names %d tests, but only %d with their package in parentheses after them", all, placed)
	}
	if placed < 100 {
		t.Errorf("only %d tests found in docs/security.md: has its format changed?", placed)
	}
}
