package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Verdict says whether a row met its target.
type Verdict string

// The verdicts a row can carry.
const (
	Pass Verdict = "pass"
	Fail Verdict = "FAIL"
	Info Verdict = "info" // no target: reported for context
)

// Row is one figure of the report. Plugin and NoAuth are medians over the rounds; Ratio is the median of
// the per-round ratios plugin/no-auth (NaN when there is no no-auth counterpart). When Baseline is not
// empty the NoAuth column holds that baseline instead of a no-auth broker's figure (for example the same
// broker while idle).
type Row struct {
	Load   string
	Figure string
	Unit   string
	Plugin float64
	NoAuth float64
	Ratio  float64
	// RatioMin and RatioMax are the range of the per-round ratios (NaN without a ratio).
	RatioMin, RatioMax float64
	Baseline           string
	Target             string
	Verdict            Verdict
	Rounds             int
}

// Report is a finished benchmark run.
type Report struct {
	Rows    []Row
	Machine Machine
	Command string
	Took    time.Duration
	Notes   []string
	// Targets is the summary against the goals (targets.go); TargetResults fills it on first use.
	Targets []TargetResult
}

// TargetResults evaluates the targets against the rows once and returns the summary.
func (r *Report) TargetResults() []TargetResult {
	if r.Targets == nil {
		r.Targets = Evaluate(r, Targets())
	}
	return r.Targets
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int
	Kernel    string
	Mosquitto string
	Postgres  string
	Go        string
	Date      time.Time
}

// Row returns the first row whose figure starts with prefix, for tests.
func (r *Report) Row(load, prefix string) (Row, bool) {
	for _, row := range r.Rows {
		if row.Load == load && strings.HasPrefix(row.Figure, prefix) {
			return row, true
		}
	}
	return Row{}, false
}

// Failed lists the rows that missed their target.
func (r *Report) Failed() []Row {
	var out []Row
	for _, row := range r.Rows {
		if row.Verdict == Fail {
			out = append(out, row)
		}
	}
	return out
}

func median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// quantile of sorted durations (nearest rank), NaN when empty.
func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i])
}

// target is a check on a row: a text for the table and a predicate over (plugin, ratio).
type target struct {
	text string
	ok   func(plugin, ratio float64) bool
}

func ratioAtMost(x float64) *target {
	return &target{text: fmt.Sprintf("ratio ≤ %.2f", x), ok: func(_, r float64) bool { return r <= x }}
}

func ratioAtLeast(x float64) *target {
	return &target{text: fmt.Sprintf("ratio ≥ %.2f", x), ok: func(_, r float64) bool { return r >= x }}
}

func valueAtMost(x float64, text string) *target {
	return &target{text: text, ok: func(p, _ float64) bool { return p <= x }}
}

func valueBelow(x float64, text string) *target {
	return &target{text: text, ok: func(p, _ float64) bool { return p < x }}
}

// pair builds a row from per-round values of the plugin broker and its baseline.
func pair(load, figure, unit string, plugin, base []float64, t *target) Row {
	ratios := make([]float64, 0, len(plugin))
	for i := range plugin {
		if i < len(base) && base[i] != 0 {
			ratios = append(ratios, plugin[i]/base[i])
		}
	}
	r := Row{Load: load, Figure: figure, Unit: unit, Plugin: median(plugin), NoAuth: median(base), Ratio: median(ratios), Rounds: len(plugin),
		RatioMin: math.NaN(), RatioMax: math.NaN()}
	if len(ratios) == 0 {
		r.Ratio = math.NaN()
	} else {
		r.RatioMin, r.RatioMax = slices.Min(ratios), slices.Max(ratios)
	}
	r.judge(t)
	return r
}

// single builds a row with no no-auth counterpart.
func single(load, figure, unit string, plugin []float64, t *target) Row {
	r := Row{Load: load, Figure: figure, Unit: unit, Plugin: median(plugin), NoAuth: math.NaN(), Ratio: math.NaN(), Rounds: len(plugin),
		RatioMin: math.NaN(), RatioMax: math.NaN()}
	r.judge(t)
	return r
}

func (r *Row) judge(t *target) {
	if t == nil {
		r.Verdict, r.Target = Info, "—"
		return
	}
	r.Target = t.text
	r.Verdict = Fail
	if !math.IsNaN(r.Plugin) && t.ok(r.Plugin, r.Ratio) {
		r.Verdict = Pass
	}
}

// formatValue prints a value in its unit: durations are stored in nanoseconds.
func formatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "—"
	}
	switch unit {
	case "dur":
		return formatDur(v)
	case "/s":
		return fmt.Sprintf("%s/s", formatNum(v))
	case "B":
		switch {
		case v >= 1<<30:
			return fmt.Sprintf("%.2f GiB", v/(1<<30))
		case v >= 1<<20:
			return fmt.Sprintf("%.1f MiB", v/(1<<20))
		case v >= 1<<10:
			return fmt.Sprintf("%.1f KiB", v/(1<<10))
		}
		return fmt.Sprintf("%.0f B", v)
	case "":
		return formatNum(v)
	}
	return formatNum(v) + " " + unit
}

func formatDur(ns float64) string {
	switch {
	case ns >= 1e9:
		return fmt.Sprintf("%.2f s", ns/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}

func formatNum(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e9:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func (r Row) cells() []string {
	base := formatValue(r.NoAuth, r.Unit)
	if r.Baseline != "" && base != "—" {
		base += " (" + r.Baseline + ")"
	}
	ratio := "—"
	if !math.IsNaN(r.Ratio) {
		ratio = fmt.Sprintf("%.3f", r.Ratio)
		// The range of the per-round ratios: on a shared machine the median alone hides how far they spread.
		if r.RatioMax > r.RatioMin {
			ratio += fmt.Sprintf(" (%.2f–%.2f)", r.RatioMin, r.RatioMax)
		}
	}
	return []string{r.Load, r.Figure, formatValue(r.Plugin, r.Unit), base, ratio, r.Target, string(r.Verdict)}
}

var header = []string{"load", "figure", "plugin", "no-auth", "ratio", "target", "result"}

// WriteText prints the table with aligned columns, for a terminal.
func (r *Report) WriteText(w io.Writer) {
	rows := [][]string{header}
	for _, row := range r.Rows {
		rows = append(rows, row.cells())
	}
	width := make([]int, len(header))
	for _, cells := range rows {
		for i, c := range cells {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, cells := range rows {
		var b strings.Builder
		for i, c := range cells {
			b.WriteString(c)
			if i < len(cells)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	fmt.Fprintln(w)
	ts := r.TargetResults()
	WriteTargets(w, ts)
	fmt.Fprintf(w, "\n%d figures, %d failed; %d targets, %d failed; %s\n", len(r.Rows), len(r.Failed()), len(ts), TargetsFailed(ts), r.Machine.line())
}

func (m Machine) line() string {
	return fmt.Sprintf("%d CPUs, Linux %s, %s, %s, %s, %s", m.CPUs, m.Kernel, m.Mosquitto, m.Postgres, m.Go,
		m.Date.UTC().Format("2006-01-02 15:04 MST"))
}

// WriteMarkdown writes the report as a Markdown section: machine, command, then the table.
func (r *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "## Benchmark: plugin vs Mosquitto without auth\n\n")
	fmt.Fprintf(w, "- machine: %d CPUs (`nproc`), Linux %s (`uname -r`), %s, %s, %s\n", r.Machine.CPUs, r.Machine.Kernel,
		r.Machine.Mosquitto, r.Machine.Postgres, r.Machine.Go)
	fmt.Fprintf(w, "- date: %s; the run took %s\n", r.Machine.Date.UTC().Format("2006-01-02 15:04 MST"), r.Took.Round(time.Second))
	fmt.Fprintf(w, "- command: `%s`\n", r.Command)
	fmt.Fprintf(w, "- every plugin/no-auth pair was measured in the same run, alternating brokers round by round; values are medians over the rounds and the ratio is the median of the per-round ratios. Broker CPU is utime+stime of the mosquitto process (all threads) from /proc/<pid>/stat.\n")
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintf(w, "\n| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	for _, row := range r.Rows {
		cells := row.cells()
		for i := range cells {
			cells[i] = strings.ReplaceAll(cells[i], "|", "\\|")
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	ts := r.TargetResults()
	writeTargetsMarkdown(w, ts)
	fmt.Fprintf(w, "\n%d figures, %d failed; %d targets, %d failed.\n", len(r.Rows), len(r.Failed()), len(ts), TargetsFailed(ts))
}
