package fleet_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseURL(t *testing.T) {
	t.Setenv(fleet.PasswordEnv, "")
	for _, tc := range []struct {
		url                string
		network, addr      string
		db                 int
		user, password     string
		tls                bool
		readTimeout        time.Duration
		dialTimeoutDefault bool
	}{
		{url: "redis://localhost", network: "tcp", addr: "localhost:6379", readTimeout: fleet.DefaultReadTimeout},
		{url: "redis://:pw@cache.internal:6380/2", network: "tcp", addr: "cache.internal:6380", db: 2, password: "pw", readTimeout: fleet.DefaultReadTimeout},
		{url: "redis://me:pw@[::1]:7000", network: "tcp", addr: "[::1]:7000", user: "me", password: "pw", readTimeout: fleet.DefaultReadTimeout},
		{url: "rediss://cache.example.com", network: "tcp", addr: "cache.example.com:6379", tls: true, readTimeout: fleet.DefaultReadTimeout},
		{url: "unix:///run/redis.sock?db=3", network: "unix", addr: "/run/redis.sock", db: 3, readTimeout: fleet.DefaultReadTimeout},
		{url: "unix://:pw@/run/redis.sock", network: "unix", addr: "/run/redis.sock", password: "pw", readTimeout: fleet.DefaultReadTimeout},
		{url: "redis://h?read_timeout=5s", network: "tcp", addr: "h:6379", readTimeout: 5 * time.Second},
	} {
		t.Run(tc.url, func(t *testing.T) {
			o, err := fleet.ParseURL(tc.url)
			require.NoError(t, err)
			assert.Equal(t, tc.network, o.Network)
			assert.Equal(t, tc.addr, o.Addr)
			assert.Equal(t, tc.db, o.DB)
			assert.Equal(t, tc.user, o.Username)
			assert.Equal(t, tc.password, o.Password)
			assert.Equal(t, tc.tls, o.TLSConfig != nil)
			if tc.tls {
				assert.Equal(t, "cache.example.com", o.TLSConfig.ServerName)
			}
			assert.Equal(t, tc.readTimeout, o.ReadTimeout)
			assert.Equal(t, fleet.DefaultDialTimeout, o.DialTimeout)
			assert.Equal(t, -1, o.MaxRetries, "a lost answer must not run a script twice")
		})
	}
}

func TestParseURLPasswordFromEnvironment(t *testing.T) {
	t.Setenv(fleet.PasswordEnv, "from-env")
	o, err := fleet.ParseURL("redis://localhost")
	require.NoError(t, err)
	assert.Equal(t, "from-env", o.Password)
	o, err = fleet.ParseURL("redis://:in-url@localhost")
	require.NoError(t, err)
	assert.Equal(t, "from-env", o.Password, "the environment wins over the URL")
}

func TestParseURLErrorsNameTheProblemNotThePassword(t *testing.T) {
	t.Setenv(fleet.PasswordEnv, "")
	for _, tc := range []struct{ url, want string }{
		{"http://:hunter2@localhost", `scheme "http"`},
		{"localhost:6379", "scheme"},
		{"redis://:hunter2@", "no host"},
		{"redis://:hunter2@localhost/notadb", "notadb"},
		{"redis://:hunter2@localhost/1/2", "path"},
		{"redis://:hunter2@localhost?bogus=1", "bogus"},
		{"redis://:hunter2@localhost?dial_timeout=soon", "dial_timeout"},
		{"unix://:hunter2@", "socket path"},
		{"redis://:hunter2@local host\x7f", "not a URL"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := fleet.ParseURL(tc.url)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "redis URL")
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestNewClientConnectsOverUnixSocketWithPassword(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Password: "s3cret"})
	ctx := context.Background()

	t.Run("from the environment", func(t *testing.T) {
		t.Setenv(fleet.PasswordEnv, "s3cret")
		c, err := fleet.NewClient(srv.URL())
		require.NoError(t, err)
		defer c.Close()
		assert.NoError(t, c.Ping(ctx).Err())
	})
	t.Run("from the URL", func(t *testing.T) {
		t.Setenv(fleet.PasswordEnv, "")
		c, err := fleet.NewClient("unix://:s3cret@" + srv.Socket())
		require.NoError(t, err)
		defer c.Close()
		assert.NoError(t, c.Ping(ctx).Err())
	})
	t.Run("wrong password is refused without echoing it", func(t *testing.T) {
		t.Setenv(fleet.PasswordEnv, "wrong-one")
		c, err := fleet.NewClient(srv.URL())
		require.NoError(t, err)
		defer c.Close()
		err = c.Ping(ctx).Err()
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "wrong-one")
		assert.True(t, strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "invalid"), err.Error())
	})
}

// Errors no wait can fix used to be waited out like a Redis that is down:
// a certificate from another CA, a wrong password and a missing one made
// Load (and every worker) retry until its bound, then report Redis as
// unavailable. They fail at once now, with their cause.
func TestPermanentRedisErrorsFailAtOnce(t *testing.T) {
	files := redistest.NewTLS(t)
	other := redistest.NewTLS(t)
	tlsArgs, port := redistest.TLSArgs(t, files, true)
	srv := redistest.Start(t, redistest.Options{Password: "right", Args: tlsArgs})
	tlsURL := fmt.Sprintf("rediss://:right@127.0.0.1:%d", port)
	for _, tc := range []struct {
		name, url string
		tls       fleet.TLSFiles
		want      string
	}{
		{"untrusted certificate", tlsURL, fleet.TLSFiles{CA: other.CA, Cert: files.ClientCert, Key: files.ClientKey}, "certificate signed by unknown authority"},
		{"no client certificate", tlsURL, fleet.TLSFiles{CA: files.CA}, "certificate required"},
		{"wrong password", "unix://:wrong@" + srv.Socket(), fleet.TLSFiles{}, "WRONGPASS"},
		{"no password", "unix://" + srv.Socket(), fleet.TLSFiles{}, "NOAUTH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(fleet.PasswordEnv, "")
			o, err := fleet.ParseURL(tc.url)
			require.NoError(t, err)
			require.NoError(t, tc.tls.Apply(o))
			rdb := redis.NewClient(o)
			defer rdb.Close()
			s, err := fleet.NewTokenStore(rdb, "perm", fleet.StoreOptions{Outage: time.Minute})
			require.NoError(t, err)
			start := time.Now()
			_, err = s.Load(ctxT(t))
			require.Error(t, err)
			assert.Less(t, time.Since(start), 5*time.Second, "failed at once, not after waiting")
			assert.ErrorContains(t, err, tc.want)
			assert.NotErrorIs(t, err, fleet.ErrUnavailable)
			assert.False(t, fleet.Unreachable(err))
			assert.NotContains(t, err.Error(), "right")
		})
	}
	t.Run("trusted", func(t *testing.T) {
		o, err := fleet.ParseURL(tlsURL)
		require.NoError(t, err)
		require.NoError(t, fleet.TLSFiles{CA: files.CA, Cert: files.ClientCert, Key: files.ClientKey}.Apply(o))
		rdb := redis.NewClient(o)
		defer rdb.Close()
		assert.NoError(t, rdb.Ping(ctxT(t)).Err())
	})
	t.Run("files checked", func(t *testing.T) {
		o, err := fleet.ParseURL(tlsURL)
		require.NoError(t, err)
		assert.ErrorContains(t, fleet.TLSFiles{CA: "/nonexistent/ca.pem"}.Apply(o), "/nonexistent/ca.pem")
		assert.ErrorContains(t, fleet.TLSFiles{Cert: files.ClientCert}.Apply(o), "both")
		assert.ErrorContains(t, fleet.TLSFiles{CA: files.ClientKey}.Apply(o), "no PEM certificate")
		plain, err := fleet.ParseURL("unix://" + srv.Socket())
		require.NoError(t, err)
		assert.ErrorContains(t, fleet.TLSFiles{CA: files.CA}.Apply(plain), "rediss://")
	})
	t.Run("down is waited for", func(t *testing.T) {
		assert.True(t, fleet.Unreachable(fmt.Errorf("dial: %w", &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded})))
	})
}
