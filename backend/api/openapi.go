package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
)

// openapiDoc is the OpenAPI 3 document of the built-in routes. TestOpenAPIMatchesRoutes keeps it in
// step with builtinRoutes: every route documented, nothing documented that is not routed, and each
// operation's security and x-roles equal to the route's authentication and roles.
//
//go:embed openapi.json
var openapiDoc []byte

// buildOpenAPI returns the served document: the built-in one plus the operations of extra routes.
func buildOpenAPI(extra []Route) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(openapiDoc, &doc); err != nil {
		return nil, fmt.Errorf("api: embedded openapi.json: %w", err)
	}
	paths, _ := doc["paths"].(map[string]any)
	if paths == nil {
		return nil, fmt.Errorf("api: embedded openapi.json has no paths")
	}
	for _, rt := range extra {
		if len(rt.OpenAPI) == 0 {
			return nil, fmt.Errorf("api: extra route %s has no OpenAPI operation", rt.Pattern())
		}
		var op map[string]any
		if err := json.Unmarshal(rt.OpenAPI, &op); err != nil {
			return nil, fmt.Errorf("api: OpenAPI operation of %s: %w", rt.Pattern(), err)
		}
		item, _ := paths[rt.Path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.Path] = item
		}
		m := strings.ToLower(rt.Method)
		if _, dup := item[m]; dup {
			return nil, fmt.Errorf("api: route %s is registered twice", rt.Pattern())
		}
		item[m] = op
	}
	return json.Marshal(doc)
}
