package auth

import (
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/cache"
)

// Group is a cache invalidation group: one agent, as a 16-byte uuid when it is canonical.
type Group struct {
	id    uuid.UUID
	name  string // the agent when it is not a canonical uuid
	named bool
}

// GroupFor is the invalidation group of agent.
func GroupFor(agent string) Group {
	if id, ok := uuid.Parse(agent); ok {
		return Group{id: id}
	}
	return Group{name: agent, named: true}
}

// GroupOf is the cache group function: entries are invalidated per agent.
func GroupOf(e Entry) Group {
	if e.flags&flagAgentInExt != 0 {
		return Group{name: e.x.agent, named: true}
	}
	return Group{id: e.agent}
}

// Cache is the credential cache: answers by API key digest, invalidated per agent.
type Cache struct {
	*cache.Cache[secret.Digest, Entry, Group]
}

// NewCache builds the credential cache; a nil opt.Group means GroupOf.
func NewCache(opt cache.Options[Entry, Group]) (*Cache, error) {
	if opt.Group == nil {
		opt.Group = GroupOf
	}
	c, err := cache.New[secret.Digest](opt)
	if err != nil {
		return nil, err
	}
	return &Cache{c}, nil
}

// InvalidateGroup makes every entry of agent fetched at or before at behave as absent.
func (c *Cache) InvalidateGroup(agent string, at time.Time) {
	c.Cache.InvalidateGroup(GroupFor(agent), at)
}
