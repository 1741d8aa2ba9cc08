package fleet_test

import (
	"context"
	"strings"
	"testing"
	"time"

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
