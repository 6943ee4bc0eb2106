package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/iotauth/iotauth/backend/redact"
)

// Default body limits: small for ordinary requests, larger for routes that carry an agent's state.
const (
	defaultMaxBody = 64 << 10
	stateMaxBody   = 1 << 20
)

// decodeJSON reads a request body strictly (docs/security.md, H1): the Content-Type must be application/json
// (415 otherwise), the body at most maxBytes (413), a single JSON object whose member names match dst's
// json tags exactly, each at most once (400 for unknown, duplicate or differently-cased names), with
// nothing after it (400). dst must be a pointer to a struct.
func decodeJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, dst any) error {
	if err := checkContentType(r); err != nil {
		return err
	}
	body, err := readBody(w, r, maxBytes)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest(CodeInvalidJSON, "the request body is empty; send a JSON object")
	}
	return strictUnmarshal(body, dst)
}

// decodeOptionalJSON is decodeJSON for routes whose body may be omitted entirely (then dst keeps its
// zero value and no Content-Type is needed).
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, dst any) error {
	body, err := readBody(w, r, maxBytes)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := checkContentType(r); err != nil {
		return err
	}
	return strictUnmarshal(body, dst)
}

func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		return problem(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "send the body as Content-Type: application/json")
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return problem(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "only the charset=utf-8 parameter is accepted on application/json")
		}
	}
	return nil
}

func readBody(w http.ResponseWriter, r *http.Request, maxBytes int64) ([]byte, error) {
	if maxBytes <= 0 {
		maxBytes = defaultMaxBody
	}
	if r.ContentLength > maxBytes {
		return nil, problem(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("the body may be at most %d bytes", maxBytes))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, problem(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("the body may be at most %d bytes", maxBytes))
		}
		return nil, badRequest(CodeInvalidJSON, "the request body could not be read")
	}
	return body, nil
}

// strictUnmarshal checks the top-level member names of body against dst's json tags, then decodes with
// unknown fields disallowed. encoding/json alone would accept "EMAIL" for "email" and let a duplicate
// member silently win; neither is acceptable for a security API.
func strictUnmarshal(body []byte, dst any) error {
	allowed := jsonNames(dst)
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return badRequest(CodeInvalidJSON, "the body is not valid JSON")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return badRequest(CodeInvalidJSON, "the body must be a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badRequest(CodeInvalidJSON, "the body is not valid JSON")
		}
		name, _ := tok.(string)
		if !allowed[name] {
			shown := redact.String(truncate(name, 64))
			p := badRequest(CodeInvalidJSON, fmt.Sprintf("unknown member %q", shown))
			p.Field = shown
			return p
		}
		if seen[name] {
			p := badRequest(CodeInvalidJSON, fmt.Sprintf("member %q appears twice", name))
			p.Field = name
			return p
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return badRequest(CodeInvalidJSON, "the body is not valid JSON")
		}
	}
	if _, err := dec.Token(); err != nil {
		return badRequest(CodeInvalidJSON, "the body is not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest(CodeInvalidJSON, "unexpected data after the JSON object")
	}
	if p := checkJSONDocument(body); p != nil {
		return p
	}
	full := json.NewDecoder(bytes.NewReader(body))
	full.DisallowUnknownFields()
	if err := full.Decode(dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			p := badRequest(CodeInvalidJSON, fmt.Sprintf("member %q has the wrong type (expected %s)", te.Field, te.Type))
			p.Field = te.Field
			return p
		}
		return badRequest(CodeInvalidJSON, "the body does not match the expected object")
	}
	return nil
}

// jsonNames lists the member names a struct accepts, from its json tags.
func jsonNames(dst any) map[string]bool {
	t := reflect.TypeOf(dst)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	names := map[string]bool{}
	if t.Kind() != reflect.Struct {
		return names
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names[name] = true
	}
	return names
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// writeJSON sends v as application/json with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
