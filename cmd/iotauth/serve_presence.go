package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/store"
)

// defaultPresenceRetention is how long ended sessions are kept (PRESENCE_RETENTION; docs/presence.md).
const defaultPresenceRetention = 30 * 24 * time.Hour

// presencePruneBatch bounds the rows one prune statement deletes, so that a large backlog never holds
// long locks; presencePruneEvery is how often serve prunes.
const (
	presencePruneBatch = 5000
	presencePruneEvery = time.Hour
)

// presenceRetention reads PRESENCE_RETENTION: a duration such as 720h, or whole days such as 30d.
func presenceRetention(getenv func(string) string) (time.Duration, error) {
	v := strings.TrimSpace(getenv("PRESENCE_RETENTION"))
	if v == "" {
		return defaultPresenceRetention, nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(v, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(v)
	}
	if err != nil || d < time.Hour {
		return 0, fmt.Errorf("PRESENCE_RETENTION=%q: give how long ended sessions are kept, at least 1h, as days (30d) or a duration (720h)", v)
	}
	return d, nil
}

// prunePresence deletes ended sessions older than the retention now and every presencePruneEvery until
// ctx ends, in batches. Several replicas pruning at once only share the work.
func prunePresence(ctx context.Context, st *store.Store, retention time.Duration, log *slog.Logger) {
	for {
		var total int64
		for ctx.Err() == nil {
			n, err := st.Presence.PrunePresence(ctx, time.Now().Add(-retention), presencePruneBatch)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("could not prune old presence sessions; will try again in an hour", "error", err.Error())
				}
				break
			}
			total += n
			if n < presencePruneBatch {
				break
			}
		}
		if total > 0 {
			log.Info("pruned presence sessions past retention", "sessions", total, "retention", retention.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(presencePruneEvery):
		}
	}
}

// startPresencePrune reads the retention and starts the pruning in the background.
func startPresencePrune(ctx context.Context, st *store.Store, getenv func(string) string, log *slog.Logger) error {
	retention, err := presenceRetention(getenv)
	if err != nil {
		return err
	}
	go prunePresence(ctx, st, retention, log)
	return nil
}
