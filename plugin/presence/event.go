package presence

import (
	"encoding/json"
	"time"
)

// eventBody is a lifecycle event as published: reason on disconnected only.
type eventBody struct {
	Event     string `json:"event"`
	AgentUUID string `json:"agentUuid"`
	ClientID  string `json:"clientId"`
	Broker    string `json:"broker"`
	At        string `json:"at"`
	Reason    Reason `json:"reason,omitempty"`
}

// atFormat is RFC 3339 in UTC with milliseconds.
const atFormat = "2006-01-02T15:04:05.000Z"

func eventJSON(event, agent, clientID, broker string, at time.Time, reason Reason) []byte {
	b, _ := json.Marshal(eventBody{Event: event, AgentUUID: agent, ClientID: clientID, Broker: broker, At: at.UTC().Format(atFormat), Reason: reason})
	return b
}
