package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/fleet"
)

// fleetOptions are fetch's fleet-mode flags: the processes that name the
// same Redis and fleet share one session and one set of rate limits.
// --redis itself is defined with the batch flags (batch.go).
type fleetOptions struct {
	name      string
	lockLease time.Duration
}

func (o *fleetOptions) flags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.lockLease, "lock-lease", 0, "with --redis: the lease of the fleet's refresh lock, renewed while a refresh runs; a process that dies holding it stops the fleet's refreshes for at most this long (default 15s; give every process of a fleet the same)")
	fs.StringVar(&o.name, "fleet", "", "with --redis: the fleet's name, shared by the processes that share one session and one set of rate limits (default: derived from --base-url and COURIER_CLIENT_ID)")
}

// fleetMode is a fetch's connection to its fleet; close it after the
// engine.
type fleetMode struct {
	rdb      *redis.Client
	name     string // the fleet's
	limiter  *fleet.Limiter
	breakers *fleet.BreakerStore // nil without --breaker
}

func (m *fleetMode) close() {
	if m == nil {
		return
	}
	if m.limiter != nil {
		m.limiter.Close()
	}
	if m.breakers != nil {
		m.breakers.Close()
	}
	m.rdb.Close()
}

// apply puts cfg in fleet mode when --redis is set: the session's tokens
// live in the fleet's store on Redis, and cfg's rate limits become the
// fleet's, paced through Redis. It returns nil when --redis is not set.
func (o *fleetOptions) apply(cfg *engine.Config, rf *redisFlags, clientID string, stderr io.Writer) (*fleetMode, error) {
	if err := rf.check(); err != nil {
		return nil, err
	}
	if rf.url == "" {
		if o.name != "" {
			return nil, fmt.Errorf("--fleet needs --redis")
		}
		if o.lockLease != 0 {
			return nil, fmt.Errorf("--lock-lease needs --redis")
		}
		return nil, nil
	}
	if o.lockLease < 0 {
		return nil, fmt.Errorf("--lock-lease: %s is negative", o.lockLease)
	}
	name := o.name
	if name == "" {
		name = fleet.DefaultName(cfg.BaseURL, clientID)
	}
	if err := fleet.CheckName(name); err != nil {
		return nil, fmt.Errorf("--fleet: %v", err)
	}
	// A Redis that does not answer yet is waited for: the store's first
	// read waits for it, bounded; the limiter paces with a local share
	// until it answers. One that refuses us is an error now.
	rdb, err := rf.connect("fetch", stderr)
	if err != nil {
		return nil, err
	}
	m := &fleetMode{rdb: rdb, name: name}

	m.limiter, err = fleet.NewLimiter(rdb, name, fleet.LimiterOptions{})
	if err != nil {
		m.close()
		return nil, err
	}
	// The engine keeps its limits (--rate, --burst, per host and route)
	// and their adaptive changes; the fleet's limiter makes them, and the
	// holds, the whole fleet's.
	cfg.RateLimit.Limiter = m.limiter

	// A breaker that trips in one process opens in every process.
	if b := cfg.Breaker; b.ConsecutiveFailures > 0 || b.Failures > 0 || b.FailureRatio > 0 {
		if m.breakers, err = fleet.NewBreakerStore(rdb, name); err != nil {
			m.close()
			return nil, err
		}
		cfg.Breaker.Store = m.breakers
	}

	// The session: the fleet's store is the source of truth. The first
	// process seeds it with its tokens (from the environment, or from
	// --token-file); later ones adopt what it holds.
	store, err := fleet.NewTokenStore(rdb, name, fleet.StoreOptions{})
	if err != nil {
		m.close()
		return nil, err
	}
	if local := cfg.Auth.Store; local != nil {
		ctx, cancel := context.WithTimeout(context.Background(), fleet.DefaultDialTimeout)
		v, err := local.Load(ctx)
		cancel()
		if err == nil && cfg.Auth.AccessToken == "" && cfg.Auth.RefreshToken == "" {
			cfg.Auth.AccessToken, cfg.Auth.RefreshToken, cfg.Auth.Expiry = v.AccessToken, v.RefreshToken, v.Expiry
		}
	}
	cfg.Auth.Store = store
	cfg.Auth.LockLease = o.lockLease
	return m, nil
}
