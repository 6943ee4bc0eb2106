package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
)

// The targets are the goals `make bench` is held to, one line each under the table, e.g.
//
//	cached connect  1.06×  ≤ 1.08×  pass
//
// Each is evaluated from the finished report's rows (Evaluate is a pure function of the rows), so the
// rows keep their own per-figure verdicts and the targets add the summary. A target whose rows are not
// in the report (the load was left out with -only, or go-auth was not built) reads "not run" and counts
// neither as pass nor as failure.

// Target is one goal. Measure returns the value to print and whether it meets the goal; found is false
// when the report holds none of the rows it needs.
type Target struct {
	Name    string
	Goal    string
	Measure func(rep *Report) (value string, ok, found bool)
}

// Match selects rows: Load must start with LoadPrefix and contain LoadContains, Figure must equal Figure.
type Match struct {
	LoadPrefix, LoadContains, Figure string
}

func (m Match) rows(rep *Report) []Row {
	var out []Row
	for _, row := range rep.Rows {
		if strings.HasPrefix(row.Load, m.LoadPrefix) && strings.Contains(row.Load, m.LoadContains) && row.Figure == m.Figure {
			out = append(out, row)
		}
	}
	return out
}

// RatioAtMost is met when the largest ratio (median of per-round ratios vs no-auth) of the rows any of
// matches selects is at most limit: with several rows (32 and 8 clients, QoS 0 and 1) the worst counts.
func RatioAtMost(name string, limit float64, matches ...Match) Target {
	return Target{Name: name, Goal: fmt.Sprintf("≤ %.2f×", limit), Measure: func(rep *Report) (string, bool, bool) {
		worst, found := math.Inf(-1), false
		for _, m := range matches {
			for _, row := range m.rows(rep) {
				if math.IsNaN(row.Ratio) {
					return "—", false, true // measured, but no ratio (a zero baseline): a failure, not a pass
				}
				worst, found = math.Max(worst, row.Ratio), true
			}
		}
		if !found {
			return "—", false, false
		}
		return fmt.Sprintf("%.2f×", worst), worst <= limit, true
	}}
}

// ValueAtMost is met when the largest value (the plugin column) of the matching rows is at most limit
// (below it when strict); unit formats it as the table does.
func ValueAtMost(name string, limit float64, strict bool, unit string, matches ...Match) Target {
	op := "≤"
	if strict {
		op = "<"
	}
	return Target{Name: name, Goal: op + " " + formatValue(limit, unit), Measure: func(rep *Report) (string, bool, bool) {
		worst, found := math.Inf(-1), false
		for _, m := range matches {
			for _, row := range m.rows(rep) {
				if math.IsNaN(row.Plugin) {
					return "—", false, true // measured, but no value: a failure, not a pass
				}
				worst, found = math.Max(worst, row.Plugin), true
			}
		}
		if !found {
			return "—", false, false
		}
		return formatValue(worst, unit), worst < limit || (!strict && worst == limit), true
	}}
}

// RowsPass is met when every matching row passed its own target (for goals whose bound depends on the
// run's settings, such as a rate budget plus its burst); the value shown is the largest plugin value.
func RowsPass(name, goal, unit string, matches ...Match) Target {
	return Target{Name: name, Goal: goal, Measure: func(rep *Report) (string, bool, bool) {
		worst, ok, found := math.Inf(-1), true, false
		for _, m := range matches {
			for _, row := range m.rows(rep) {
				found = true
				worst = math.Max(worst, row.Plugin)
				ok = ok && row.Verdict == Pass
			}
		}
		if !found {
			return "—", false, false
		}
		return formatValue(worst, unit), ok, true
	}}
}

var (
	targetsMu sync.Mutex
	targets   []Target
)

// RegisterTarget adds a target to the summary of every run, after the built-in ones, in the order of
// registration. Loads in files of their own call it from init, e.g.
//
//	func init() { RegisterTarget(RatioAtMost("intermittent", 1.10, Match{LoadPrefix: "9 intermittent", Figure: "broker CPU per connect"})) }
func RegisterTarget(t Target) {
	targetsMu.Lock()
	defer targetsMu.Unlock()
	targets = append(targets, t)
}

// Targets are the built-in targets followed by the registered ones.
func Targets() []Target {
	targetsMu.Lock()
	defer targetsMu.Unlock()
	return append(builtinTargets(), targets...)
}

func builtinTargets() []Target {
	cached := Match{LoadPrefix: "1 connect storm, ", LoadContains: ", cached", Figure: figConnectCPU}
	return []Target{
		RatioAtMost("fan-in", 1.05, Match{LoadPrefix: "2c fan-in", Figure: figDeliveredCPU}),
		RatioAtMost("cached connect", 1.08, cached),
		{Name: "cached connect vs go-auth", Goal: "≥ 5 % below", Measure: func(rep *Report) (string, bool, bool) {
			m := cached
			m.Figure = figVsGoAuth
			worst, found := math.Inf(-1), false
			for _, row := range m.rows(rep) {
				if !math.IsNaN(row.Ratio) {
					worst, found = math.Max(worst, row.Ratio), true
				}
			}
			if !found {
				return "— (set GOAUTH_SO)", false, false
			}
			return fmt.Sprintf("%+.0f %%", (worst-1)*100), worst <= 0.95, true
		}},
		RatioAtMost("token reconnect", 1.2, Match{LoadPrefix: "7r short-lived credentials", Figure: figConnectCPU}),
		RatioAtMost("publish QoS 0/1", 1.05, Match{LoadPrefix: "2 publish QoS ", Figure: figDeliveredCPU}),
		RatioAtMost("reconnect storm", 1.2, Match{LoadPrefix: "3 reconnect storm", Figure: "time until all connected, preload on"}),
		ValueAtMost("revocation p99", 1e9, true, "dur",
			Match{LoadPrefix: "5 revocation", Figure: "revoke → session closed p99, broker A"},
			Match{LoadPrefix: "5 revocation", Figure: "revoke → session closed p99, broker B"}),
		RowsPass("flood bounded", "≤ budget + burst", "/s", Match{LoadPrefix: "4d forged keys", Figure: "DB lookups/s caused by forged keys"}),
		{Name: "memory per credential", Goal: "≤ 300 B", Measure: func(rep *Report) (string, bool, bool) {
			var worst Row
			found := false
			for _, row := range rep.Rows {
				if strings.HasPrefix(row.Load, "6 memory") && strings.HasPrefix(row.Figure, "bytes per cached credential") {
					if !found || row.Plugin > worst.Plugin {
						worst, found = row, true
					}
				}
			}
			if !found {
				return "—", false, false
			}
			return formatValue(worst.Plugin, "B"), worst.Plugin <= 300, true
		}},
	}
}

// TargetResult is a target's line in the summary.
type TargetResult struct {
	Name, Value, Goal string
	Verdict           Verdict
}

// NotRun is the verdict of a target whose rows the report does not hold.
const NotRun Verdict = "not run"

// Evaluate judges each target against the report's rows.
func Evaluate(rep *Report, ts []Target) []TargetResult {
	out := make([]TargetResult, 0, len(ts))
	for _, t := range ts {
		value, ok, found := t.Measure(rep)
		v := Fail
		switch {
		case !found:
			v = NotRun
		case ok:
			v = Pass
		}
		out = append(out, TargetResult{Name: t.Name, Value: value, Goal: t.Goal, Verdict: v})
	}
	return out
}

// TargetsFailed counts the failed targets.
func TargetsFailed(rs []TargetResult) int {
	n := 0
	for _, r := range rs {
		if r.Verdict == Fail {
			n++
		}
	}
	return n
}

// WriteTargets prints the summary with aligned columns.
func WriteTargets(w io.Writer, rs []TargetResult) {
	width := [3]int{}
	for _, r := range rs {
		for i, c := range []string{r.Name, r.Value, r.Goal} {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	fmt.Fprintln(w, "targets:")
	for _, r := range rs {
		var b strings.Builder
		for i, c := range []string{r.Name, r.Value, r.Goal} {
			b.WriteString("  " + c + strings.Repeat(" ", width[i]-len([]rune(c))))
		}
		fmt.Fprintf(w, "%s  %s\n", b.String(), r.Verdict)
	}
}

// writeTargetsMarkdown writes the summary as a Markdown table.
func writeTargetsMarkdown(w io.Writer, rs []TargetResult) {
	fmt.Fprintf(w, "\n| target | value | goal | result |\n| --- | --- | --- | --- |\n")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.Name, r.Value, r.Goal, r.Verdict)
	}
}
