package api

import (
	"fmt"
	"net/url"
	"time"

	"github.com/iotauth/iotauth/backend/store"
)

// keysetPage reads a list route's limit and cursor (pageLimit, pageCursor) into a store.Page.
func keysetPage(q url.Values) (store.Page, error) {
	var p store.Page
	var err error
	if p.Limit, err = pageLimit(q); err != nil {
		return p, err
	}
	if p.AfterTime, p.AfterID, err = pageCursor(q); err != nil {
		return p, err
	}
	return p, nil
}

// FormatCursor is the nextCursor of a keyset page whose last row was created at t with id id; pageCursor
// reads it back.
func FormatCursor(t time.Time, id string) string {
	return fmt.Sprintf("%d-%s", t.UnixMicro(), id)
}

// listBody is a list route's answer: the items and, while more follow, the cursor of the next page.
func listBody[T any](items []T, more bool, cursor func(last T) string) map[string]any {
	out := map[string]any{"items": items}
	if more && len(items) > 0 {
		out["nextCursor"] = cursor(items[len(items)-1])
	}
	return out
}
