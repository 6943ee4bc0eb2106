package throttle

import (
	"context"
	"sync"
	"time"
)

// Memory is a Counter in this process's memory. It is not shared between replicas: use it in unit
// tests and single-process embedding only (`iotauth serve` counts in PostgreSQL).
type Memory struct {
	maxKeys int

	mu      sync.Mutex
	entries map[string]*entry
}

type entry struct {
	start    time.Time
	failures int
}

// NewMemory returns an empty Memory holding at most maxKeys live windows (default 100000): beyond it,
// ended windows are swept and new keys are not tracked until there is room.
func NewMemory(maxKeys int) *Memory {
	if maxKeys <= 0 {
		maxKeys = 100000
	}
	return &Memory{maxKeys: maxKeys, entries: map[string]*entry{}}
}

// Add implements Counter.
func (m *Memory) Add(_ context.Context, key string, now time.Time, window time.Duration, max int) (int, time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	if ok && !now.Before(e.start.Add(window)) {
		ok = false
	}
	if !ok {
		if _, present := m.entries[key]; !present && len(m.entries) >= m.maxKeys {
			m.sweep(now, window)
			if len(m.entries) >= m.maxKeys {
				// Memory stays bounded: past maxKeys live windows a new key is not tracked.
				return 1, now, nil
			}
		}
		e = &entry{start: now}
		m.entries[key] = e
	}
	if e.failures >= max {
		e.failures = max + 1
		return e.failures, e.start, nil
	}
	e.failures++
	return e.failures, e.start, nil
}

// Get implements Counter.
func (m *Memory) Get(_ context.Context, key string, now time.Time, window time.Duration) (int, time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	if !ok || !now.Before(e.start.Add(window)) {
		return 0, time.Time{}, nil
	}
	return e.failures, e.start, nil
}

// Sub implements Counter.
func (m *Memory) Sub(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok && e.failures > 0 {
		e.failures--
	}
	return nil
}

// Delete implements Counter.
func (m *Memory) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	delete(m.entries, key)
	m.mu.Unlock()
	return nil
}

// Prune implements Counter.
func (m *Memory) Prune(_ context.Context, before time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, e := range m.entries {
		if !e.start.After(before) {
			delete(m.entries, k)
		}
	}
	return nil
}

// Len is the number of keys held (for tests).
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

func (m *Memory) sweep(now time.Time, window time.Duration) {
	for k, e := range m.entries {
		if !now.Before(e.start.Add(window)) {
			delete(m.entries, k)
		}
	}
}
