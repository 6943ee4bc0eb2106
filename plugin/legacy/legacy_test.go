package legacy

import (
	"testing"

	"github.com/iotauth/iotauth/backend/core/secret"
)

func TestSet(t *testing.T) {
	a, b, c := secret.DigestOf("a"), secret.DigestOf("b"), secret.DigestOf("c")
	s := New()
	if s.Len() != 0 || s.Has(a) {
		t.Fatal("new set not empty")
	}
	s.Apply(a, true)
	s.Apply(b, true)
	s.Apply(b, false)
	if !s.Has(a) || s.Has(b) || s.Len() != 1 {
		t.Fatal("Apply")
	}

	// A load races with notifications: changes notified during the load win over what it read.
	s.BeginLoad()
	s.Apply(c, true)  // imported after the load's snapshot
	s.Apply(a, false) // retired after the load's snapshot
	if !s.Has(c) || s.Has(a) {
		t.Fatal("changes during a load must apply at once too")
	}
	s.FinishLoad(map[secret.Digest]struct{}{a: {}, b: {}}, true)
	if !s.Has(b) || !s.Has(c) || s.Has(a) || s.Len() != 2 {
		t.Fatalf("after the load: a=%v b=%v c=%v len=%d, want false true true 2", s.Has(a), s.Has(b), s.Has(c), s.Len())
	}

	// A failed load keeps the set, and stops journalling.
	s.BeginLoad()
	s.Apply(a, true)
	s.FinishLoad(nil, false)
	if !s.Has(a) || !s.Has(b) || !s.Has(c) {
		t.Fatal("a failed load changed the set")
	}
	s.Apply(a, false)
	s.BeginLoad()
	s.FinishLoad(map[secret.Digest]struct{}{}, true)
	if s.Len() != 0 {
		t.Fatal("an empty load must empty the set")
	}
}
