package cache

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// keys lists l's keys from most to least recently used, checking the links both ways.
func keys(t *testing.T, l *lru[int, int]) []int {
	t.Helper()
	var fwd []int
	prev := int32(-1)
	for i := l.head; i >= 0; i = l.at(i).next {
		if l.at(i).prev != prev {
			t.Fatalf("node %d: prev = %d, want %d", i, l.at(i).prev, prev)
		}
		fwd = append(fwd, l.at(i).key)
		prev = i
	}
	if prev != l.tail {
		t.Fatalf("tail = %d, last node %d", l.tail, prev)
	}
	if len(fwd) != l.Len() {
		t.Fatalf("%d linked nodes, Len %d", len(fwd), l.Len())
	}
	return fwd
}

func TestLRUOrder(t *testing.T) {
	tests := []struct {
		name      string
		ops       func(l *lru[int, int])
		want      []int // most recently used first
		evictions int
	}{
		{"empty", func(l *lru[int, int]) {}, nil, 0},
		{"adds", func(l *lru[int, int]) { l.Add(1, 1); l.Add(2, 2); l.Add(3, 3) }, []int{3, 2, 1}, 0},
		{"get moves to front", func(l *lru[int, int]) { l.Add(1, 1); l.Add(2, 2); l.Add(3, 3); l.Get(1) }, []int{1, 3, 2}, 0},
		{"update moves to front", func(l *lru[int, int]) { l.Add(1, 1); l.Add(2, 2); l.Add(1, 10) }, []int{1, 2}, 0},
		{"evicts least recent", func(l *lru[int, int]) {
			l.Add(1, 1)
			l.Add(2, 2)
			l.Add(3, 3)
			l.Get(1)
			l.Add(4, 4)
			l.Add(5, 5)
		}, []int{5, 4, 1}, 2},
		{"remove head, middle, tail", func(l *lru[int, int]) {
			l.Add(1, 1)
			l.Add(2, 2)
			l.Add(3, 3)
			l.Remove(3)
			l.Add(4, 4)
			l.Remove(1)
			l.Add(5, 5)
			l.Remove(4)
		}, []int{5, 2}, 0},
		{"remove absent", func(l *lru[int, int]) { l.Add(1, 1); l.Remove(7) }, []int{1}, 0},
		{"purge counts evictions", func(l *lru[int, int]) { l.Add(1, 1); l.Add(2, 2); l.Purge(); l.Add(3, 3) }, []int{3}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := 0
			l := newLRU[int, int](3, func() { ev++ })
			tt.ops(l)
			if got := keys(t, l); !slices.Equal(got, tt.want) {
				t.Fatalf("keys %v, want %v", got, tt.want)
			}
			if ev != tt.evictions {
				t.Fatalf("%d evictions, want %d", ev, tt.evictions)
			}
			for _, k := range tt.want {
				if _, ok := l.Get(k); !ok {
					t.Fatalf("Get(%d) missed", k)
				}
			}
		})
	}
}

func TestLRUReusesFreedNodes(t *testing.T) {
	l := newLRU[int, int](3000, nil)
	for i := range 2500 {
		l.Add(i, i)
	}
	used, chunks := l.used, len(l.chunks)
	if chunks != 3 {
		t.Fatalf("%d chunks for 2500 nodes, want 3 of 1024", chunks)
	}
	for i := range 1000 {
		l.Remove(i)
	}
	for i := range 1000 {
		l.Add(10_000+i, i)
	}
	if l.used != used || len(l.chunks) != chunks {
		t.Fatalf("slab grew from %d to %d nodes though 1000 were free", used, l.used)
	}
	if l.Len() != 2500 {
		t.Fatalf("Len = %d, want 2500", l.Len())
	}
}

// TestLRUModel checks random operations against a plain slice model of an LRU whose hits move a key to
// the front only when it was last moved there window moves ago or more (exact LRU below capacity 8).
func TestLRUModel(t *testing.T) {
	for _, capacity := range []int{1, 2, 7, 8, 64, 1024, 1500} {
		r := rand.New(rand.NewPCG(1, uint64(capacity)))
		ev := 0
		l := newLRU[int, int](capacity, func() { ev++ })
		window := uint64(capacity / 8)
		var model []int // keys, most recent first
		vals := map[int]int{}
		moved := map[int]uint64{} // the move count at each key's last move to the front
		var moves uint64
		wantEv := 0
		touch := func(k int) {
			if len(model) > 0 && model[0] == k {
				return
			}
			model = slices.DeleteFunc(model, func(x int) bool { return x == k })
			model = slices.Insert(model, 0, k)
			moves++
			moved[k] = moves
		}
		for step := range 20_000 {
			k := r.IntN(2 * capacity)
			switch op := r.IntN(10); {
			case op < 5:
				l.Add(k, step)
				if !slices.Contains(model, k) && len(model) == capacity {
					delete(vals, model[len(model)-1])
					model = model[:len(model)-1]
					wantEv++
				}
				touch(k)
				vals[k] = step
			case op < 8:
				v, ok := l.Get(k)
				want, wantOK := vals[k]
				if ok != wantOK || v != want {
					t.Fatalf("cap %d step %d: Get(%d) = %d, %v; want %d, %v", capacity, step, k, v, ok, want, wantOK)
				}
				if ok && moves-moved[k] >= window {
					touch(k)
				}
			default:
				l.Remove(k)
				model = slices.DeleteFunc(model, func(x int) bool { return x == k })
				delete(vals, k)
			}
		}
		if got := keys(t, l); !slices.Equal(got, model) {
			t.Fatalf("cap %d: order diverged from the model", capacity)
		}
		if ev != wantEv {
			t.Fatalf("cap %d: %d evictions, want %d", capacity, ev, wantEv)
		}
		if l.used > int32(capacity) {
			t.Fatalf("cap %d: slab holds %d nodes", capacity, l.used)
		}
	}
}

// A hit on a key among the most recent part of the list writes nothing: the list stays as it was.
func TestLRURecentHitLeavesListAlone(t *testing.T) {
	l := newLRU[int, int](80, nil) // window 10
	for i := range 80 {
		l.Add(i, i)
	}
	before := keys(t, l)
	for k := 79; k > 79-10; k-- { // the ten most recently added
		if _, ok := l.Get(k); !ok {
			t.Fatalf("Get(%d) missed", k)
		}
	}
	if got := keys(t, l); !slices.Equal(got, before) {
		t.Fatalf("hits on recent keys reordered the list:\n%v\nwant\n%v", got, before)
	}
	l.Get(79 - 10) // the eleventh is outside the window: it moves
	if got := keys(t, l); got[0] != 69 {
		t.Fatalf("Get(69) left %d at the front", got[0])
	}
}

// The guarantee the cache documents: a key that was used is evicted only after at least capacity-window
// new keys were added, whatever the order of the list when it was used.
func TestLRUUsedKeySurvivesTurnover(t *testing.T) {
	for _, capacity := range []int{8, 100, 1000, 3000} {
		window := capacity / 8
		r := rand.New(rand.NewPCG(2, uint64(capacity)))
		for trial := range 20 {
			l := newLRU[int, int](capacity, nil)
			next := 0
			for range capacity {
				l.Add(next, next)
				next++
			}
			for range r.IntN(4 * capacity) { // in some random order
				if r.IntN(3) == 0 {
					l.Get(r.IntN(next))
				} else {
					l.Add(next, next)
					next++
				}
			}
			held := keys(t, l)
			k := held[r.IntN(len(held))]
			if _, ok := l.Get(k); !ok {
				t.Fatalf("cap %d trial %d: key %d not held", capacity, trial, k)
			}
			for range capacity - window - 1 {
				l.Add(next, next)
				next++
			}
			if _, ok := l.index[k]; !ok {
				t.Fatalf("cap %d trial %d: key %d evicted by %d new keys after it was used", capacity, trial, k, capacity-window-1)
			}
		}
	}
}

func TestLRURemoveDropsReferences(t *testing.T) {
	l := newLRU[int, *int](4, nil)
	v := new(int)
	l.Add(1, v)
	i := l.index[1]
	l.Remove(1)
	if l.at(i).val != nil {
		t.Fatal("a removed node still references its value")
	}
}
