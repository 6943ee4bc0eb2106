package batch

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func keysOf(b Batch[string, int]) []string {
	var ks []string
	for _, e := range b.Entries {
		ks = append(ks, fmt.Sprintf("%s=%d", e.Key, e.Value))
	}
	return ks
}

func TestBatcher(t *testing.T) {
	kind := func(v int) string { return fmt.Sprint(v % 2) }
	tests := []struct {
		name        string
		run         func(b *Batcher[string, int]) Batch[string, int]
		want        []string
		wantDropped map[string]int
	}{
		{"in order", func(b *Batcher[string, int]) Batch[string, int] {
			b.Add("a", 1)
			b.Add("b", 2)
			return b.Take()
		}, []string{"a=1", "b=2"}, nil},
		{"last wins in place", func(b *Batcher[string, int]) Batch[string, int] {
			b.Add("a", 1)
			b.Add("b", 2)
			b.Add("a", 3)
			return b.Take()
		}, []string{"a=3", "b=2"}, nil},
		{"bounded, dropped counted by kind", func(b *Batcher[string, int]) Batch[string, int] {
			for i, k := range []string{"a", "b", "c", "d", "e", "f"} {
				b.Add(k, i)
			}
			b.Add("a", 9) // a key already held still takes its new value
			return b.Take()
		}, []string{"a=9", "b=1", "c=2"}, map[string]int{"1": 2, "0": 1}},
		{"put back ahead of newer entries", func(b *Batcher[string, int]) Batch[string, int] {
			b.Add("a", 1)
			b.Add("b", 2)
			failed := b.Take()
			b.Add("c", 3)
			b.Add("b", 4) // newer than the failed batch's b
			b.PutBack(failed)
			return b.Take()
		}, []string{"a=1", "c=3", "b=4"}, nil},
		{"put back beyond the bound drops the newest", func(b *Batcher[string, int]) Batch[string, int] {
			b.Add("a", 1)
			b.Add("b", 3)
			failed := b.Take()
			b.Add("c", 5)
			b.Add("d", 7)
			if lost := b.PutBack(failed); lost != 1 {
				panic(fmt.Sprint("lost ", lost))
			}
			return b.Take()
		}, []string{"a=1", "b=3", "c=5"}, map[string]int{"1": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New[string, int](3, 0, kind)
			got := tt.run(b)
			if !slices.Equal(keysOf(got), tt.want) {
				t.Errorf("took %v, want %v", keysOf(got), tt.want)
			}
			if fmt.Sprint(got.Dropped) != fmt.Sprint(tt.wantDropped) {
				t.Errorf("dropped %v, want %v", got.Dropped, tt.wantDropped)
			}
			if b.Len() != 0 || !b.Take().Empty() {
				t.Error("Take did not empty the batcher")
			}
		})
	}
}

func TestDue(t *testing.T) {
	b := New[int, int](10, 5*time.Second, nil)
	t0 := time.Unix(1_800_000_000, 0)
	for _, step := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {4 * time.Second, false}, {5 * time.Second, true}, {6 * time.Second, false}, {10 * time.Second, true}} {
		if got := b.Due(t0.Add(step.at)); got != step.want {
			t.Errorf("Due at %v = %v, want %v", step.at, got, step.want)
		}
	}
	if always := New[int, int](10, 0, nil); !always.Due(t0) || !always.Due(t0) {
		t.Error("a batcher without an interval is not due whenever asked")
	}
}

// Adding after a Take reuses the batcher's storage: producers on the broker's thread do not allocate.
func TestAddAfterTakeAllocatesNothing(t *testing.T) {
	b := New[int, int](1000, 0, nil)
	for i := range 100 {
		b.Add(i, i)
	}
	b.Take()
	i := 0
	if n := testing.AllocsPerRun(50, func() { b.Add(i, i); i++ }); n != 0 {
		t.Errorf("Add allocates %v times", n)
	}
}
