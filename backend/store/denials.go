package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Denial is one entry of the subject deny list (schema 006): every short-lived MQTT credential that
// derives from Subject and was issued at or before DeniedAt is dead.
type Denial struct {
	Subject  string
	DeniedAt time.Time
}

// DenySubject records (or renews) a denial of subject through db, so that it commits with the change
// that caused it. Triggers already deny application keys and users that change; this is for the rest
// (publishable keys, identity providers).
func DenySubject(ctx context.Context, db DBTX, subject, reason string) error {
	if _, err := db.Exec(ctx, `SELECT iotauth_deny($1, $2)`, subject, reason); err != nil {
		return fmt.Errorf("deny %s: %w", subject, err)
	}
	return nil
}

// DenySubject records a denial on its own.
func (s Credentials) DenySubject(ctx context.Context, subject, reason string) error {
	return Classify(s.tx(ctx, true, func(tx pgx.Tx) error { return DenySubject(ctx, tx, subject, reason) }))
}

// Denials lists the denials recorded after since (the plugin loads those younger than the longest
// credential lifetime at start).
func (s Credentials) Denials(ctx context.Context, since time.Time) ([]Denial, error) {
	rows, err := s.idem().Query(ctx, `SELECT subject, denied_at FROM subject_denials WHERE denied_at > $1 ORDER BY denied_at`, since)
	if err != nil {
		return nil, fmt.Errorf("list subject denials: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Denial])
	if err != nil {
		return nil, fmt.Errorf("list subject denials: %w", err)
	}
	return out, nil
}

// PruneDenials deletes denials recorded before before; it reports how many it deleted.
func (s Credentials) PruneDenials(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.idem().Exec(ctx, `DELETE FROM subject_denials WHERE denied_at < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune subject denials: %w", err)
	}
	return tag.RowsAffected(), nil
}
