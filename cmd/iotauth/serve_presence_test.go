package main

import (
	"testing"
	"time"
)

func TestPresenceRetention(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 30 * 24 * time.Hour, "7d": 7 * 24 * time.Hour, "36h": 36 * time.Hour} {
		got, err := presenceRetention(func(string) string { return v })
		if err != nil || got != want {
			t.Errorf("PRESENCE_RETENTION=%q: %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"0d", "10m", "x", "-1d", "3 days"} {
		if _, err := presenceRetention(func(string) string { return v }); err == nil {
			t.Errorf("PRESENCE_RETENTION=%q accepted", v)
		}
	}
}
