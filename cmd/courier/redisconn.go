package main

// The Redis connection of fetch --redis, collect and batch: the URL, the
// TLS files of a rediss:// URL, and the first contact, which tells a Redis
// that is away (waited for) from one that refuses us (an error at once).

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redact"
)

// redisFlags are the flags that say how to reach Redis.
type redisFlags struct {
	url string
	tls fleet.TLSFiles
}

func (r *redisFlags) flags(fs *pflag.FlagSet, urlUsage string) {
	fs.StringVar(&r.url, "redis", "", urlUsage)
	fs.StringVar(&r.tls.CA, "redis-ca", "", "with a rediss:// --redis: a PEM file of the CA certificates that Redis's certificate must chain to (default: the system's)")
	fs.StringVar(&r.tls.Cert, "redis-cert", "", "with a rediss:// --redis: a PEM client certificate, for a Redis that asks for one (tls-auth-clients); needs --redis-key")
	fs.StringVar(&r.tls.Key, "redis-key", "", "with a rediss:// --redis: the PEM private key of --redis-cert")
}

// check reports flags given without --redis.
func (r *redisFlags) check() error {
	if r.url != "" {
		return nil
	}
	for flag, v := range map[string]string{"--redis-ca": r.tls.CA, "--redis-cert": r.tls.Cert, "--redis-key": r.tls.Key} {
		if v != "" {
			return fmt.Errorf("%s needs --redis", flag)
		}
	}
	return nil
}

// connect opens a client and makes first contact. A Redis that does not
// answer (down, restarting, unreachable) is reported on stderr and
// waited for by the caller's own retries; one that answers with an error
// no wait can fix (a wrong or missing password, an ACL refusal) or whose
// TLS handshake fails (an untrusted certificate, a refused client
// certificate) is an error that names the cause. A password in the URL is
// warned about: other users of the machine can read argv.
func (r *redisFlags) connect(cmd string, stderr io.Writer) (*redis.Client, error) {
	if r.url == "" {
		return nil, fmt.Errorf("--redis URL is required")
	}
	opts, err := fleet.ParseURL(r.url)
	if err != nil {
		return nil, fmt.Errorf("--redis: %v", err)
	}
	if err := r.tls.Apply(opts); err != nil {
		return nil, fmt.Errorf("--redis-ca, --redis-cert, --redis-key: %v", err)
	}
	if u, err := url.Parse(r.url); err == nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			fmt.Fprintf(stderr, "courier %s: warning: the --redis URL holds a password, which other users of this machine can read in its process list; set %s instead\n", cmd, fleet.PasswordEnv)
		}
	}
	redis.SetLogger(redisQuiet{})
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), fleet.DefaultDialTimeout)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		where := redact.RawURL(r.url)
		if !fleet.Unreachable(err) {
			rdb.Close()
			return nil, fmt.Errorf("redis at %s: %s", where, redisCause(err))
		}
		fmt.Fprintf(stderr, "courier %s: redis at %s does not answer (%v); waiting for it\n", cmd, where, err)
	}
	return rdb, nil
}

// redisCause names what a permanent Redis error is about, before Redis's
// own words.
func redisCause(err error) string {
	msg := err.Error()
	var rerr redis.Error
	switch {
	case errors.As(err, &rerr) && (strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "WRONGPASS")):
		return fmt.Sprintf("authentication failed (%s); the password comes from %s or the URL", msg, fleet.PasswordEnv)
	case errors.As(err, &rerr) && strings.HasPrefix(msg, "NOPERM"):
		return fmt.Sprintf("not allowed by the Redis user's ACL (%s)", msg)
	case errors.As(err, &rerr):
		return msg
	}
	return fmt.Sprintf("TLS failed (%s); give the CA with --redis-ca, a client certificate with --redis-cert and --redis-key", msg)
}

// redisQuiet keeps the Redis client's own log lines (each failed dial
// while Redis is away) off stderr; courier reports what matters itself.
type redisQuiet struct{}

func (redisQuiet) Printf(context.Context, string, ...any) {}

// fleetName is the fleet of a command given --fleet or --base-url (and
// COURIER_CLIENT_ID), the way fetch derives it.
func fleetName(name, baseURL string) (string, error) {
	if name == "" {
		if baseURL == "" {
			return "", nil
		}
		name = fleet.DefaultName(baseURL, os.Getenv("COURIER_CLIENT_ID"))
	}
	if err := fleet.CheckName(name); err != nil {
		return "", fmt.Errorf("--fleet: %v", err)
	}
	return name, nil
}
