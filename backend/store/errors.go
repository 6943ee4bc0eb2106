package store

import (
	"errors"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// Kinds of failure PostgreSQL reports that callers branch on, besides ErrNotFound, ErrConflict and
// ErrInvalid. The store returns them wrapped in an *Error, so that callers compare with errors.Is and
// never look at SQLSTATE codes; the PostgreSQL error stays underneath for the log.
var (
	// ErrMalformed: a value does not have the form its column needs (for example a JSON document with a
	// lone UTF-16 surrogate, or text that is not a number where one belongs).
	ErrMalformed = errors.New("a value does not have the form its column needs")
	// ErrBadCharacter: a text value holds a character the database cannot store (NUL, \u0000 in JSON).
	ErrBadCharacter = errors.New("a text value holds a character the database cannot store")
	// ErrOutOfRange: a number is beyond what its column can hold.
	ErrOutOfRange = errors.New("a number is out of the range the database can store")
	// ErrUnavailable: PostgreSQL could not be reached or will not take work now (see Unavailable); worth
	// retrying later.
	ErrUnavailable = errors.New("the database is unavailable")
)

// Error is a database failure the store has classified: errors.Is(err, Kind) holds, and errors.As
// reaches the driver's error underneath (for the log). Its text is the underlying error's.
type Error struct {
	// Kind is one of ErrConflict, ErrInvalid, ErrMalformed, ErrBadCharacter, ErrOutOfRange or
	// ErrUnavailable.
	Kind error
	// Err is what the driver returned, with the store's context.
	Err error
}

// Error returns the underlying error's text.
func (e *Error) Error() string { return e.Err.Error() }

// Unwrap gives errors.Is and errors.As both the kind and the underlying error.
func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

// Classify returns err as an *Error when PostgreSQL's answer is one callers branch on: a unique value
// taken (ErrConflict), a CHECK, NOT NULL or foreign key refusing a value (ErrInvalid), a malformed value
// (ErrMalformed), a character that cannot be stored (ErrBadCharacter), a number out of range
// (ErrOutOfRange), or the database being unreachable (ErrUnavailable). Other errors, nil and errors
// classified already come back unchanged. The store's methods return classified errors; the REST API's
// single error mapping calls Classify too, as a backstop for errors that reach it by another way.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var done *Error
	if errors.As(err, &done) {
		return err
	}
	var kind error
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case pgerrcode.UniqueViolation:
			kind = ErrConflict
		case pgerrcode.CheckViolation, pgerrcode.NotNullViolation, pgerrcode.ForeignKeyViolation:
			kind = ErrInvalid
		case pgerrcode.InvalidTextRepresentation:
			kind = ErrMalformed
		case pgerrcode.UntranslatableCharacter, pgerrcode.CharacterNotInRepertoire:
			kind = ErrBadCharacter
		case pgerrcode.NumericValueOutOfRange:
			kind = ErrOutOfRange
		}
	}
	if kind == nil && Unavailable(err) {
		kind = ErrUnavailable
	}
	if kind == nil {
		return err
	}
	return &Error{Kind: kind, Err: err}
}
