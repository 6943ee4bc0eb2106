// Package auditq is the plugin's bounded queue of audit events waiting to be written to PostgreSQL
// (refused connects, kicks). A write that fails — PostgreSQL down, a failover under way — puts its
// events back, so that they are written once the database answers again; what does not fit is counted
// by kind, never held, so that an outage cannot grow the broker's memory.
package auditq

import "sync"

// Queue holds at most Max events of type T. Its methods are safe for concurrent use.
type Queue[T any] struct {
	max  int
	kind func(T) string

	mu      sync.Mutex
	events  []T
	dropped map[string]int // events not held (the queue was full), by kind, not yet written
	total   int64          // every event ever dropped
}

// New returns a queue of at most max events; kind names an event's kind (its action), by which
// dropped events are counted.
func New[T any](max int, kind func(T) string) *Queue[T] {
	return &Queue[T]{max: max, kind: kind}
}

// Add queues e; it reports false when the queue was full and e was only counted.
func (q *Queue[T]) Add(e T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.events) >= q.max {
		q.dropLocked(e)
		return false
	}
	q.events = append(q.events, e)
	return true
}

func (q *Queue[T]) dropLocked(e T) {
	if q.dropped == nil {
		q.dropped = map[string]int{}
	}
	q.dropped[q.kind(e)]++
	q.total++
}

// Take empties the queue: the events, oldest first, and the counts of dropped events by kind. The
// caller writes them, then calls Failed with the same values if the write failed.
func (q *Queue[T]) Take() (events []T, dropped map[string]int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	events, dropped = q.events, q.dropped
	q.events, q.dropped = nil, nil
	return events, dropped
}

// Failed puts back what Take returned, ahead of what was queued since (so that the trail keeps its
// order). Events beyond the bound are dropped, newest first, and counted; it returns how many.
func (q *Queue[T]) Failed(events []T, dropped map[string]int) (lost int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	all := append(events, q.events...)
	if len(all) > q.max {
		for _, e := range all[q.max:] {
			q.dropLocked(e)
		}
		lost = len(all) - q.max
		all = all[:q.max:q.max]
	}
	q.events = all
	for k, n := range dropped {
		if q.dropped == nil {
			q.dropped = map[string]int{}
		}
		q.dropped[k] += n
	}
	return lost
}

// Len returns how many events are queued.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.events)
}

// Dropped returns how many events were dropped since the queue was made.
func (q *Queue[T]) Dropped() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.total
}
