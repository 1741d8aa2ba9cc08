package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
)

// rateOptions are fetch's per-host limits: --rate-host and --rate-per-host.
// The global --rate and --burst stay with the other flags.
type rateOptions struct {
	hosts     []string // HOST=RATE[:BURST], or HOST/PATH=RATE[:BURST] for a route
	perHost   string   // RATE[:BURST]
	holdScope string   // auto, host or route
}

func (o *rateOptions) flags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.hosts, "rate-host", nil, "limit of one host, HOST=RATE[:BURST], HOST as in the URLs with its port if it has one (api.example.com=10, 127.0.0.1:8080=5:20); HOST/PATH=RATE[:BURST] limits the requests under PATH on that host apart (repeatable)")
	fs.StringVar(&o.perHost, "rate-per-host", "", "limit of each host that --rate-host does not name, RATE[:BURST] (default: unlimited; every host still slows down on 429s and waits out Retry-After and exhausted quotas)")
	fs.StringVar(&o.holdScope, "hold-scope", "auto", "what a Retry-After holds: auto (a 429 holds the host, a 503 only its path), host, or route (the path alone); an exhausted quota always holds the host")
}

// apply checks the flags and sets the limits in cfg.
func (o *rateOptions) apply(cfg *engine.Config) error {
	if o.holdScope != "" {
		scope, err := engine.ParseHoldScope(o.holdScope)
		if err != nil {
			return fmt.Errorf("--hold-scope %q: want auto, host or route", o.holdScope)
		}
		cfg.RateLimit.Adaptive.HoldScope = scope
	}
	if o.perHost != "" {
		r, err := parseRate(o.perHost)
		if err != nil {
			return fmt.Errorf("--rate-per-host %q: %v", o.perHost, err)
		}
		cfg.RateLimit.PerHost = r
	}
	seen := map[string]bool{}
	for _, v := range o.hosts {
		target, spec, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("--rate-host %q: want HOST=RATE[:BURST], as in api.example.com=10 or 127.0.0.1:8080=5:20", v)
		}
		r, err := parseRate(spec)
		if err != nil {
			return fmt.Errorf("--rate-host %q: %v", v, err)
		}
		host, path, isRoute := strings.Cut(target, "/")
		if host == "" || strings.Contains(host, ":/") || strings.ContainsAny(host, "?#@ \t") || strings.Contains(target, "://") {
			return fmt.Errorf("--rate-host %q: %q is not a host: give it as in the URLs, without a scheme (api.example.com, 127.0.0.1:8080)", v, target)
		}
		key := strings.ToLower(target)
		if seen[key] {
			return fmt.Errorf("--rate-host %q: %s is limited twice", v, target)
		}
		seen[key] = true
		if isRoute {
			cfg.RateLimit.Routes = append(cfg.RateLimit.Routes, engine.Route{Host: host, Prefix: "/" + path, Rate: r})
			continue
		}
		if cfg.RateLimit.Hosts == nil {
			cfg.RateLimit.Hosts = map[string]engine.Rate{}
		}
		cfg.RateLimit.Hosts[host] = r
	}
	return nil
}

// parseRate reads RATE[:BURST]: a rate per second above zero and, if
// given, a burst of at least 1.
func parseRate(s string) (engine.Rate, error) {
	rs, bs, hasBurst := strings.Cut(s, ":")
	rate, err := strconv.ParseFloat(strings.TrimSpace(rs), 64)
	if err != nil || !(rate > 0) || math.IsInf(rate, 0) {
		return engine.Rate{}, fmt.Errorf("rate %q: want requests per second, a number above 0 (10, 0.5)", rs)
	}
	r := engine.Rate{PerSecond: rate}
	if hasBurst {
		b, err := strconv.Atoi(strings.TrimSpace(bs))
		if err != nil || b < 1 {
			return engine.Rate{}, fmt.Errorf("burst %q: want a whole number of requests, at least 1", bs)
		}
		r.Burst = b
	}
	return r, nil
}
