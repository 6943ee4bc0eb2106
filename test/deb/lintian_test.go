//go:build debpkg

package deb_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// lintianTag is one line of lintian's report: "E: iotauth: tag-name [context]".
var lintianTag = regexp.MustCompile(`^([EW]): iotauth[^:]*: (\S+)`)

// TestLintian runs lintian on the package: no error, and every warning is one that docs/packaging.md
// lists with its reason (a new warning fails until it is fixed or explained there).
func TestLintian(t *testing.T) {
	t.Parallel()
	deb := debPath(t)
	repo, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(repo, "docs", "packaging.md"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// lintian exits non-zero when it finds errors; the report says which.
	out, err := exec.CommandContext(ctx, "lintian", "--no-tag-display-limit", deb).CombinedOutput()
	if ctx.Err() != nil || (err != nil && !strings.Contains(string(out), "E: ")) {
		t.Fatalf("lintian did not run (scripts/deb/deps.sh test installs it): %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		m := lintianTag.FindStringSubmatch(line)
		switch {
		case m == nil:
		case m[1] == "E":
			t.Errorf("lintian error: %s", line)
		case !strings.Contains(string(doc), "`"+m[2]+"`"):
			t.Errorf("lintian warning not explained in docs/packaging.md: %s", line)
		default:
			t.Logf("documented lintian warning: %s", line)
		}
	}
}
