package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestPublishSettings: PUBLISH_* variables and flags fill the bridge's settings (flags win), and every
// bad value is reported naming its setting, without echoing credentials from the URL.
func TestPublishSettings(t *testing.T) {
	c, err := loadServeConfig([]string{"-publish-rate", "2.5"}, envMap(map[string]string{"DATABASE_URL": "x",
		"PUBLISH_BROKER_URL": "mqtts://broker.example.com:8883", "PUBLISH_MAX_PAYLOAD": "1024", "PUBLISH_RATE": "7",
		"PUBLISH_BURST": "3", "PUBLISH_TIMEOUT": "2s", "PUBLISH_KEY_TTL": "1h"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Publish
	if p.BrokerURL != "mqtts://broker.example.com:8883" || p.MaxPayload != 1024 || p.Rate != 2.5 || p.Burst != 3 ||
		p.Timeout != 2*time.Second || p.KeyTTL != time.Hour || p.MaxInFlight != 100 {
		t.Fatalf("publish settings %+v", *p)
	}
	d, err := loadServeConfig(nil, envMap(map[string]string{"DATABASE_URL": "x"}), io.Discard)
	if err != nil || d.Publish.BrokerURL != "" || d.Publish.MaxPayload != 256<<10 || d.Publish.Rate != 10 || d.Publish.KeyTTL != 24*time.Hour {
		t.Fatalf("defaults %+v %v", *d.Publish, err)
	}
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"scheme":      {map[string]string{"PUBLISH_BROKER_URL": "http://b:1883"}, "PUBLISH_BROKER_URL"},
		"credentials": {map[string]string{"PUBLISH_BROKER_URL": "tcp://u:hunter2pw@b:1883"}, "PUBLISH_BROKER_URL"},
		"payload":     {map[string]string{"PUBLISH_MAX_PAYLOAD": "0"}, "PUBLISH_MAX_PAYLOAD"},
		"rate":        {map[string]string{"PUBLISH_RATE": "fast"}, "PUBLISH_RATE"},
		"zero rate":   {map[string]string{"PUBLISH_RATE": "0"}, "PUBLISH_RATE"},
		"burst":       {map[string]string{"PUBLISH_BURST": "0"}, "PUBLISH_BURST"},
		"key ttl":     {map[string]string{"PUBLISH_KEY_TTL": "10s"}, "PUBLISH_KEY_TTL"},
		"timeout":     {map[string]string{"PUBLISH_TIMEOUT": "1m"}, "PUBLISH_TIMEOUT"},
	} {
		tc.env["DATABASE_URL"] = "x"
		_, err := loadServeConfig(nil, envMap(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2pw") {
			t.Errorf("%s: error %v does not name %s (or echoes a password)", name, err, tc.want)
		}
	}
}
