package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// deafFeed is a feed whose LISTEN connects but never receives a notification sent through the query pool:
// every attempt fails with ErrFeedDeaf.
type deafFeed struct{}

func (deafFeed) Listen(ctx context.Context, h ListenHandler) {
	for ctx.Err() == nil {
		h.Failed(fmt.Errorf("%w: no probe within 5s", ErrFeedDeaf))
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A deaf feed is a configuration error: logged as one error that says what to set (plugin_opt_listen_dsn
// without one, where it must point with one), never as the feed listening.
func TestDeafFeedLogged(t *testing.T) {
	for _, c := range []struct {
		name string
		opts [][2]string
		want string
	}{
		{"through plugin_opt_dsn", nil, "Set plugin_opt_listen_dsn to a direct connection to the primary"},
		{"listen_dsn elsewhere", [][2]string{{"listen_dsn", "postgres://feed@127.0.0.1/x"}},
			"plugin_opt_listen_dsn must reach the same primary and database as plugin_opt_dsn"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixtureWith(t, func(cfg *Config, _ *fakeClock) { cfg.Feed = deafFeed{} }, c.opts...)
			f.e.Start()
			deadline := time.Now().Add(10 * time.Second)
			for !f.b.logged(c.want) && time.Now().Before(deadline) {
				f.e.FlushLogs()
				time.Sleep(5 * time.Millisecond)
			}
			if !f.b.logged(c.want) || !f.b.logged("receives no notifications sent through plugin_opt_dsn") {
				t.Fatalf("no error saying what to do; logged %q", f.b.logs)
			}
			time.Sleep(100 * time.Millisecond) // more failed attempts (what is asserted: logged once)
			f.e.FlushLogs()
			n := 0
			f.b.mu.Lock()
			for _, l := range f.b.logs {
				if strings.Contains(l, "receives no notifications") {
					n++
				}
				if strings.Contains(l, "credential change feed listening") || strings.Contains(l, "(LISTEN) down; retrying") {
					t.Errorf("logged %q for a deaf feed", l)
				}
			}
			f.b.mu.Unlock()
			if n != 1 {
				t.Errorf("the deaf feed's error logged %d times, want once", n)
			}
		})
	}
}
