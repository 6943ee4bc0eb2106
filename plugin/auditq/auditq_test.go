package auditq

import (
	"fmt"
	"reflect"
	"testing"
)

type event struct{ action, id string }

func kind(e event) string { return e.action }

func ids(es []event) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.id)
	}
	return out
}

func TestFailedWriteKeepsEventsInOrder(t *testing.T) {
	q := New(3, kind)
	q.Add(event{"kick", "1"})
	q.Add(event{"kick", "2"})
	es, dropped := q.Take()
	q.Add(event{"refused", "3"}) // queued while the write was failing
	if lost := q.Failed(es, dropped); lost != 0 {
		t.Fatalf("lost %d, want 0", lost)
	}
	es, dropped = q.Take()
	if got := ids(es); !reflect.DeepEqual(got, []string{"1", "2", "3"}) || len(dropped) != 0 {
		t.Fatalf("after a failed write: %v %v, want [1 2 3] and no drops", got, dropped)
	}
	if q.Len() != 0 {
		t.Fatalf("Take left %d events", q.Len())
	}
}

func TestBoundCountsWhatDoesNotFit(t *testing.T) {
	q := New(2, kind)
	for i := range 3 {
		q.Add(event{"kick", fmt.Sprint(i)})
	}
	if q.Dropped() != 1 {
		t.Fatalf("Dropped = %d after 3 adds to a queue of 2, want 1", q.Dropped())
	}
	es, dropped := q.Take()
	q.Add(event{"refused", "new1"})
	q.Add(event{"refused", "new2"})
	lost := q.Failed(es, dropped)
	if lost != 2 || q.Dropped() != 3 {
		t.Fatalf("Failed lost %d (total %d), want 2 (total 3)", lost, q.Dropped())
	}
	es, dropped = q.Take()
	if got := ids(es); !reflect.DeepEqual(got, []string{"0", "1"}) {
		t.Fatalf("kept %v, want the oldest [0 1]", got)
	}
	if !reflect.DeepEqual(dropped, map[string]int{"kick": 1, "refused": 2}) {
		t.Fatalf("dropped counts %v", dropped)
	}
	// Counts of a failed write are kept until written.
	q.Failed(nil, dropped)
	if _, d := q.Take(); !reflect.DeepEqual(d, map[string]int{"kick": 1, "refused": 2}) {
		t.Fatalf("counts after a failed write: %v", d)
	}
}
