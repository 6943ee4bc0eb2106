package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestNumberFitsPostgres(t *testing.T) {
	for _, tc := range []struct {
		n  string
		ok bool
	}{
		{"0", true}, {"-0.0", true}, {"1e131071", true}, {"123e131069", true}, {"0.00001e131076", true},
		{"-1e131071", true}, {"1e-16383", true}, {"0e999999", true}, {"1.5E10", true}, {"5e-324", true},
		{"1e131072", false}, {"1234e131069", false}, {"1e999999", false}, {"1e-16384", false},
		{"1.5e-16383", false}, {"0.0e-16383", false}, {"0e-16384", false}, {"1e99999999999999999999", false},
	} {
		if got := numberFitsPostgres(tc.n); got != tc.ok {
			t.Errorf("numberFitsPostgres(%s) = %v, want %v", tc.n, got, tc.ok)
		}
	}
}

func TestCheckJSONDocument(t *testing.T) {
	for _, tc := range []struct {
		name, body, code, field string
	}{
		{"plain", `{"a": {"b": [1, "x", null, true]}}`, "", ""},
		{"surrogate pair", `{"a": "\ud83d\ude00"}`, "", ""},
		{"escaped backslash before u0000", `{"a": "\\u0000"}`, "", ""},
		{"empty member names in different objects", `{"": {"": 1}, "b": {"": 2}}`, "", ""},
		{"same name in sibling objects", `{"a": [{"k": 1}, {"k": 2}]}`, "", ""},
		{"NUL", `{"a": "\u0000"}`, CodeInvalidCharacter, "a"},
		{"NUL in a name", `{"a": {"\u0000": 1}}`, CodeInvalidCharacter, "a"},
		{"lone high surrogate at the end", `{"a": "x\ud800"}`, CodeInvalidCharacter, "a"},
		{"high surrogate and a plain escape", `{"a": "\ud800\n"}`, CodeInvalidCharacter, "a"},
		{"two high surrogates", `{"a": "\ud800\ud800"}`, CodeInvalidCharacter, "a"},
		{"lone low surrogate", `{"a": "\udfff"}`, CodeInvalidCharacter, "a"},
		{"not UTF-8", "{\"a\": \"\xff\"}", CodeInvalidCharacter, ""},
		{"number out of range", `{"a": [0, 1e999999]}`, CodeNumberOutOfRange, "a"},
		{"top-level duplicate", `{"a": 1, "a": 2}`, CodeInvalidJSON, "a"},
		{"deep duplicate", `{"a": [{"b": {"c": 1, "c": 1}}]}`, CodeInvalidJSON, "a"},
		{"duplicate empty name", `{"a": {"": 1, "": 2}}`, CodeInvalidJSON, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := checkJSONDocument([]byte(tc.body))
			switch {
			case tc.code == "" && p != nil:
				t.Fatalf("refused: %v", p)
			case tc.code != "" && p == nil:
				t.Fatal("accepted")
			case p != nil && (p.Code != tc.code || p.Field != tc.field || p.Status != http.StatusBadRequest):
				t.Fatalf("got %d %s field %q, want %s field %q (%s)", p.Status, p.Code, p.Field, tc.code, tc.field, p.Detail)
			}
		})
	}
}

// TestDataExceptionsAreClientErrors is the backstop of H1 (docs/security.md): a value PostgreSQL refuses is a
// 400 with the code the API's own checks give, never an opaque 500.
func TestDataExceptionsAreClientErrors(t *testing.T) {
	for _, tc := range []struct {
		sqlstate, code string
	}{
		{"22P02", CodeValidation}, {"22P05", CodeInvalidCharacter}, {"22021", CodeInvalidCharacter}, {"22003", CodeNumberOutOfRange},
		{"23505", CodeInternal}, {"42P01", CodeInternal},
	} {
		err := fmt.Errorf("set target state: %w", &pgconn.PgError{Code: tc.sqlstate, Message: "secret detail"})
		p := toProblem(err)
		if p.Code != tc.code {
			t.Errorf("SQLSTATE %s: %d %s, want %s", tc.sqlstate, p.Status, p.Code, tc.code)
		}
		if p.Status == http.StatusBadRequest && !errors.Is(p, p.cause) {
			t.Errorf("SQLSTATE %s: the cause is not kept for the log", tc.sqlstate)
		}
	}
}

func FuzzCheckJSONDocument(f *testing.F) {
	for _, s := range []string{`{"a":"\u0000"}`, `{"a":"\ud800\udc00"}`, `{"a":{"b":1,"b":2}}`, `{"a":1e999999}`, `[]`, `{"a":"\u`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = checkJSONDocument(b) // must not panic on any input
	})
}

// TestDatabaseOutageIsUnavailable: connection failures and a server that is shutting down, starting up
// or full are 503 database_unavailable with Retry-After (docs/security.md, H5); the request's own deadline
// keeps its code.
func TestDatabaseOutageIsUnavailable(t *testing.T) {
	for _, err := range []error{
		&pgconn.ConnectError{},
		fmt.Errorf("list agents: %w", &pgconn.PgError{Code: "57P01"}),
		&pgconn.PgError{Code: "57P03"},
		&pgconn.PgError{Code: "53300"},
		&pgconn.PgError{Code: "08006"},
		fmt.Errorf("failed to receive message: %w", io.ErrUnexpectedEOF),
		fmt.Errorf("write: %w", syscall.ECONNRESET),
	} {
		p := toProblem(err)
		if p.Status != http.StatusServiceUnavailable || p.Code != CodeDatabaseUnavailable || p.retryAfter < 1 {
			t.Errorf("%v: %d %s retry %d", err, p.Status, p.Code, p.retryAfter)
		}
	}
	if p := toProblem(fmt.Errorf("query: %w", context.DeadlineExceeded)); p.Code != CodeUnavailable {
		t.Errorf("deadline: %s", p.Code)
	}
	if p := toProblem(&pgconn.PgError{Code: "42P01"}); p.Status != http.StatusInternalServerError {
		t.Errorf("undefined table: %d", p.Status)
	}
}
