package api_test

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/iotauth/iotauth/backend/license"
)

// TestCSVExport is the premium route GET /api/v1/agents/export behind feature data_export:
//   - any role may export (viewer here): every agent, decommissioned ones included, with uuid, name,
//     status, timestamps and target version, as text/csv, never a secret;
//   - names with commas, quotes and newlines survive a round trip through a CSV reader;
//   - cells that a spreadsheet would evaluate (= + - @, tab) come out prefixed with a single quote;
//   - format other than csv is 400; anonymous is 401;
//   - a license without data_export gives 403 feature_not_licensed, a restricted one its reason code.
func TestCSVExport(t *testing.T) {
	e, l := newLicensedEnv(t, 0, []string{license.FeatureDataExport})
	adm := e.admin()
	viewer := e.userWithRole("viewer")
	names := []string{
		"plain",
		"comma, inside",
		`say "hi"`,
		"two\nlines",
		"=HYPERLINK(\"http://evil.example\",\"x\")",
		"+1+2",
		"-3",
		"@SUM(A1:A2)",
		"\tleading tab",
		"ünïcödé ✓",
	}
	byUUID := map[string]provisioned{}
	nameOf := map[string]string{}
	for _, n := range names {
		p := e.provision(adm.Access, n)
		byUUID[p.AgentUUID] = p
		nameOf[p.AgentUUID] = n
	}
	// One agent reports state (reportedAt set), one is decommissioned (still exported).
	var reporter, gone string
	for u := range byUUID {
		switch {
		case reporter == "":
			reporter = u
		case gone == "":
			gone = u
		}
	}
	e.expect(req{Method: "PATCH", Path: "/api/v1/device/" + reporter + "/state", Header: map[string]string{"X-Device-API-Key": byUUID[reporter].APIKey},
		Body: map[string]any{"reportedState": map[string]any{"fw": "1.2"}}}, 204, "")
	e.expect(req{Method: "DELETE", Path: "/api/v1/agents/" + gone, Token: adm.Access}, 204, "")

	for _, path := range []string{"/api/v1/agents/export?format=csv", "/api/v1/agents/export"} {
		res := e.expect(req{Method: "GET", Path: path, Token: viewer.Access}, 200, "")
		mt, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
		if err != nil || mt != "text/csv" || params["charset"] != "utf-8" {
			t.Fatalf("Content-Type %q", res.Header.Get("Content-Type"))
		}
		if cd := res.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") || res.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("headers %v", res.Header)
		}
		if secretPattern.Match(res.Body) {
			t.Fatalf("the export holds a secret-shaped string")
		}
		for _, p := range byUUID {
			if bytes.Contains(res.Body, []byte(p.APIKey)) || bytes.Contains(res.Body, []byte(p.MQTT.Password)) {
				t.Fatal("the export holds an agent's secret")
			}
		}
		recs, err := csv.NewReader(bytes.NewReader(res.Body)).ReadAll()
		if err != nil {
			t.Fatalf("the export is not valid CSV: %v\n%s", err, res.Body)
		}
		if want := []string{"uuid", "name", "status", "createdAt", "updatedAt", "reportedAt", "targetVersion"}; !slices.Equal(recs[0], want) {
			t.Fatalf("header %v", recs[0])
		}
		if len(recs)-1 != len(names) {
			t.Fatalf("%d rows, want %d", len(recs)-1, len(names))
		}
		for _, r := range recs[1:] {
			u := r[0]
			want, ok := nameOf[u]
			if !ok {
				t.Fatalf("unknown uuid %q", u)
			}
			if strings.ContainsAny(want[:1], "=+-@\t") {
				want = "'" + want
			}
			if r[1] != want {
				t.Errorf("name %q exported as %q", nameOf[u], r[1])
			}
			wantStatus := "active"
			if u == gone {
				wantStatus = "decommissioned"
			}
			if r[2] != wantStatus || r[3] == "" || r[4] == "" || r[6] != "1" {
				t.Errorf("row %v", r)
			}
			if (r[5] != "") != (u == reporter) {
				t.Errorf("reportedAt %q for %s (reporter %v)", r[5], u, u == reporter)
			}
		}
	}

	e.expect(req{Method: "GET", Path: "/api/v1/agents/export?format=json", Token: viewer.Access}, 400, "validation_failed")
	e.expect(req{Method: "GET", Path: "/api/v1/agents/export?format=csv"}, 401, "authentication_required")

	// Without the feature, then restricted.
	l.install(edVendor().pubPEM, edVendor().issue(t, l.validTerms(0, license.FeatureAI)))
	for _, tk := range []tokens{adm, viewer} {
		res := e.expect(req{Method: "GET", Path: "/api/v1/agents/export?format=csv", Token: tk.Access}, 403, "feature_not_licensed")
		if !strings.Contains(res.Problem(t).Detail, "data_export") {
			t.Fatalf("the refusal does not name the feature: %s", res.Body)
		}
	}
	l.install(edVendor().pubPEM, "")
	e.expect(req{Method: "GET", Path: "/api/v1/agents/export?format=csv", Token: viewer.Access}, 403, "license_missing")
}

// TestCSVExportStreams: a fleet of several thousand agents is exported as one streamed (chunked, no
// Content-Length) response that holds every agent. The server side reads the rows through
// store.EachAgent, which hands them to the CSV writer one at a time from the database cursor.
func TestCSVExportStreams(t *testing.T) {
	e, _ := newLicensedEnv(t, 0, []string{license.FeatureDataExport})
	adm := e.admin()
	const fleet = 5000
	e.exec(`INSERT INTO agents (name) SELECT 'bulk-' || g FROM generate_series(1, $1) g`, fleet)
	hr, err := http.NewRequest("GET", e.http.URL+"/api/v1/agents/export?format=csv", nil)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+adm.Access)
	res, err := e.http.Client().Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.ContentLength != -1 || !slices.Contains(res.TransferEncoding, "chunked") {
		t.Fatalf("status %d, Content-Length %d, Transfer-Encoding %v: want a streamed 200", res.StatusCode, res.ContentLength, res.TransferEncoding)
	}
	r := csv.NewReader(res.Body)
	rows := 0
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rows > 0 && !strings.HasPrefix(rec[1], "bulk-") {
			t.Fatalf("row %d: %v", rows, rec)
		}
		rows++
	}
	if rows != fleet+1 {
		t.Fatalf("%d records, want %s", rows, strconv.Itoa(fleet+1))
	}
}
