package store

import (
	"errors"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// DataException returns the SQLSTATE of err when PostgreSQL refused a value the caller passed as
// malformed or out of range: invalid text for its type (22P02, e.g. a jsonb document with a lone
// surrogate), a character the database cannot store (22P05, \u0000 in jsonb; 22021, NUL in text) or
// a number beyond the type's range (22003). Such an error is the client's mistake, not the server's;
// the API validates input so that these stay a backstop.
func DataException(err error) (string, bool) {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		return "", false
	}
	switch pg.Code {
	case pgerrcode.InvalidTextRepresentation, pgerrcode.UntranslatableCharacter,
		pgerrcode.CharacterNotInRepertoire, pgerrcode.NumericValueOutOfRange:
		return pg.Code, true
	}
	return "", false
}
