package api

import (
	"encoding/json"
	"testing"

	"github.com/iotauth/iotauth/backend/core/topicfilter"
)

// TestOpenAPITopicLimit: every topic or topic filter the OpenAPI document describes has the product's
// one limit, topicfilter.MaxLen, as its maxLength.
func TestOpenAPITopicLimit(t *testing.T) {
	var doc any
	if err := json.Unmarshal(openapiDoc, &doc); err != nil {
		t.Fatal(err)
	}
	found := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if m, ok := c.(map[string]any); ok && (k == "topic" || k == "pattern") {
					if n, ok := m["maxLength"].(float64); ok {
						found++
						if int(n) != topicfilter.MaxLen {
							t.Errorf("%s/%s: maxLength %v, want topicfilter.MaxLen = %d", path, k, n, topicfilter.MaxLen)
						}
					}
				}
				walk(path+"/"+k, c)
			}
		case []any:
			for _, c := range v {
				walk(path+"[]", c)
			}
		}
	}
	walk("", doc)
	if found < 2 {
		t.Errorf("found %d topic lengths in openapi.json; want the publish topic and the grant pattern", found)
	}
}
