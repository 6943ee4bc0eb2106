package audit_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/audit"
)

func TestFilterPage(t *testing.T) {
	since := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name  string
		f     audit.Filter
		field string // "" when the filter is accepted
	}{
		{"empty", audit.Filter{}, ""},
		{"all", audit.Filter{Action: "app_key_create", Actor: "cli:alice", Agent: "0b9f2c1e-3d4a-4b5c-8d6e-7f8091a2b3c4",
			Since: since.Format(time.RFC3339), Until: since.Add(time.Hour).Format(time.RFC3339)}, ""},
		{"action shape", audit.Filter{Action: "App-Key"}, "action"},
		{"actor control", audit.Filter{Actor: "user:\n1"}, "actor"},
		{"actor long", audit.Filter{Actor: strings.Repeat("a", 301)}, "actor"},
		{"agent", audit.Filter{Agent: "agent-1"}, "agent"},
		{"since", audit.Filter{Since: "yesterday"}, "since"},
		{"until before since", audit.Filter{Since: since.Format(time.RFC3339), Until: since.Format(time.RFC3339)}, "until"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := c.f.Page()
			if c.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p.Action != c.f.Action || p.Actor != c.f.Actor || p.Agent != c.f.Agent || (c.f.Since != "" && !p.Since.Equal(since)) {
					t.Errorf("page %+v does not carry filter %+v", p, c.f)
				}
				return
			}
			var se *service.Error
			if !errors.As(err, &se) || !errors.Is(err, service.ErrInvalid) || se.Field != c.field || se.Msg == "" {
				t.Fatalf("got %v, want a refusal of %s", err, c.field)
			}
		})
	}
}
