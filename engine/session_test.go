package engine_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// Sessions kept in a TokenStore: the token actor's protocol with a store,
// driven in a synctest bubble with the in-process API of tokenactor_test.

// flakyStore is a MemoryStore whose writes fail while fail is set, and
// whose writes wait while gate is set.
type flakyStore struct {
	*engine.MemoryStore
	fail atomic.Bool
	mu   sync.Mutex
	gate chan struct{} // if set, writes wait until it is closed
}

func (f *flakyStore) pass() error {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if f.fail.Load() {
		return errors.New("disk full")
	}
	return nil
}

func (f *flakyStore) CompareAndSwap(ctx context.Context, gen uint64, t engine.Tokens) (engine.StoredTokens, bool, error) {
	if err := f.pass(); err != nil {
		return engine.StoredTokens{}, false, err
	}
	return f.MemoryStore.CompareAndSwap(ctx, gen, t)
}

func (f *flakyStore) Lock(ctx context.Context, lease time.Duration) (engine.TokenLock, error) {
	l, err := f.MemoryStore.Lock(ctx, lease)
	if err != nil {
		return nil, err
	}
	return flakyLock{l, f}, nil
}

type flakyLock struct {
	engine.TokenLock
	f *flakyStore
}

func (l flakyLock) Commit(ctx context.Context, gen uint64, t engine.Tokens) (engine.StoredTokens, bool, error) {
	if err := l.f.pass(); err != nil {
		l.Unlock(ctx)
		return engine.StoredTokens{}, false, err
	}
	return l.TokenLock.Commit(ctx, gen, t)
}

func stored(t *testing.T, s engine.TokenStore) engine.StoredTokens {
	t.Helper()
	v, err := s.Load(context.Background())
	require.NoError(t, err)
	return v
}

// A refresh whose answer reached the server used to be cancelled by Close
// (and by the Ctrl-C of courier fetch): the server had spent the refresh
// token, and the new one was lost with the session. Close now waits for
// the refresh in flight and stores its answer.
func TestCloseWaitsForTheRefreshInFlightAndStoresIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		gate := make(chan struct{})
		api.set(func(a *tokenAPI) { a.gate = gate })
		store := engine.NewMemoryStore()
		cfg := tokenConfig(api)
		cfg.Auth.Store = store
		e, err := engine.New(cfg)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		f := e.Submit(ctx, requests.New("GET", "/x"))
		synctest.Wait() // parked; the refresh is at the server
		cancel()        // the caller gives up
		_, err = f.Await(context.Background())
		assert.ErrorIs(t, err, context.Canceled)

		closed := make(chan struct{})
		go func() { e.Close(); close(closed) }()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned while the refresh was in flight")
		default:
		}
		close(gate)
		<-closed
		v := stored(t, store)
		assert.Equal(t, "refresh-2", v.RefreshToken, "the rotated refresh token was stored")
		assert.Equal(t, "access-2", v.AccessToken)
	})
}

// Parked requests are replayed only once the new tokens are stored.
func TestReplayWaitsForTheStoreWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		store := &flakyStore{MemoryStore: engine.NewMemoryStore()}
		cfg := tokenConfig(api)
		cfg.Auth.Store = store
		e := startEngine(t, cfg)
		gate := make(chan struct{})
		store.mu.Lock()
		store.gate = gate
		store.mu.Unlock()
		ctx := context.Background()
		f := e.Submit(ctx, requests.New("GET", "/x"))
		synctest.Wait() // refreshed; the write waits
		assert.Equal(t, []string{"Bearer stale"}, api.tokensSent(), "nothing carried the new token before it was stored")
		close(gate)
		_, err := f.Await(ctx)
		require.NoError(t, err)
		assert.Equal(t, "refresh-2", stored(t, store).RefreshToken)
	})
}

// A refresh whose answer could not be stored used to fail the requests
// that waited, as if the refresh itself had failed, though the server had
// issued new tokens. Now they are answered with the new token;
// OnTokenRefreshed still runs, the engine goes on with the new tokens,
// and writes them again until the store takes them.
func TestFailedSaveAnswersTheWaitingRequestsAndIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		store := &flakyStore{MemoryStore: engine.NewMemoryStore()}
		var hooked []engine.Tokens
		var mu sync.Mutex
		cfg := tokenConfig(api)
		cfg.Auth.Store = store
		cfg.Auth.OnTokenRefreshed = func(tk engine.Tokens) { mu.Lock(); hooked = append(hooked, tk); mu.Unlock() }
		e := startEngine(t, cfg)
		ctx := context.Background()
		store.fail.Store(true)

		resp, err := e.Get(ctx, "/x")
		require.NoError(t, err, "the request that waited is replayed with the new token")
		assert.Equal(t, 2, resp.Attempts, "the 401, then the replay")
		synctest.Wait()
		mu.Lock()
		require.Len(t, hooked, 1, "OnTokenRefreshed runs for users who persist elsewhere")
		assert.Equal(t, "refresh-2", hooked[0].RefreshToken)
		mu.Unlock()

		resp, err = e.Get(ctx, "/y")
		require.NoError(t, err, "the new tokens are in use")
		assert.Equal(t, 1, resp.Attempts)
		assert.Equal(t, "refresh-1", stored(t, store).RefreshToken)

		store.fail.Store(false)
		advance(2 * time.Second)
		assert.Equal(t, "refresh-2", stored(t, store).RefreshToken, "written again once the store works")
		assert.Equal(t, 1, api.refreshCalls())
	})
}

// Two engines sharing a store make one refresh per expiry: the second
// adopts what the first stored, and never sends the rotated-away token.
func TestEnginesSharingAStoreRefreshOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		store := engine.NewMemoryStore()
		cfg := tokenConfig(api)
		cfg.Auth.Store = store
		a, b := startEngine(t, cfg), startEngine(t, cfg)
		ctx := context.Background()
		for round := range 5 {
			for _, e := range []*engine.Engine{a, b, a, b} {
				resp, err := e.Get(ctx, "/x", requests.WithQuery("round", itoa(round)))
				require.NoError(t, err)
				assert.Equal(t, 200, resp.Status)
			}
			api.set(func(x *tokenAPI) { x.access = "expired-" + itoa(round) }) // the token expires
		}
		api.set(func(x *tokenAPI) {
			assert.Equal(t, []string{"refresh-1", "refresh-2", "refresh-3", "refresh-4", "refresh-5"}, x.refreshes,
				"one refresh per expiry, each refresh token sent once")
		})
		assert.EqualValues(t, 5, a.Stats().Refreshes+b.Stats().Refreshes)
	})
}

// SetTokens writes through the store, where other engines find them.
func TestSetTokensWritesThroughTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		store := engine.NewMemoryStore()
		cfg := tokenConfig(api)
		cfg.Auth.Store = store
		a, b := startEngine(t, cfg), startEngine(t, cfg)
		a.SetTokens(engine.Tokens{AccessToken: "access-1", RefreshToken: "refresh-1"})
		v := stored(t, store)
		assert.Equal(t, "access-1", v.AccessToken, "stored before SetTokens returns")
		synctest.Wait()
		_, err := b.Get(context.Background(), "/x")
		require.NoError(t, err)
		assert.Zero(t, api.refreshCalls(), "the other engine adopted them")
	})
}

// countingSource is an oauth2.TokenSource over the API's refresh.
type countingSource struct {
	api   *tokenAPI
	calls atomic.Int32
	fixed string // if set, always this token, as a source that thinks it still valid
}

func (s *countingSource) Token() (*oauth2.Token, error) {
	s.calls.Add(1)
	var tok *oauth2.Token
	s.api.set(func(a *tokenAPI) {
		if s.fixed != "" {
			tok = &oauth2.Token{AccessToken: s.fixed, Expiry: time.Now().Add(time.Hour)}
			return
		}
		a.gen++
		a.access = "access-" + itoa(a.gen)
		tok = &oauth2.Token{AccessToken: a.access, Expiry: time.Now().Add(time.Hour)}
	})
	return tok, nil
}

func TestOAuth2TokenSourceBothWays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		src := &countingSource{api: api}
		cfg := tokenConfig(api)
		cfg.Auth = engine.Auth{TokenSource: src}
		e := startEngine(t, cfg)
		ctx := context.Background()
		requireAllOK(t, ctx, submitItems(ctx, e, 8))
		assert.EqualValues(t, 1, src.calls.Load(), "the first token, fetched once before the first request")

		api.set(func(a *tokenAPI) { a.access = "revoked" })
		requireAllOK(t, ctx, submitItems(ctx, e, 8))
		assert.EqualValues(t, 2, src.calls.Load(), "one call per stale token")

		tok, err := e.TokenSource().Token()
		require.NoError(t, err)
		api.set(func(a *tokenAPI) { assert.Equal(t, a.access, tok.AccessToken) })
		assert.Empty(t, tok.RefreshToken, "the engine's refresh token is never handed out")
		assert.Equal(t, "Bearer", tok.TokenType)
		assert.True(t, tok.Valid())

		src.fixed = tok.AccessToken
		api.set(func(a *tokenAPI) { a.access = "known-elsewhere" })
		_, err = e.Get(ctx, "/x")
		require.ErrorIs(t, err, errors.ErrRefreshFailed, "a source that returns the rejected token cannot help")
		assert.ErrorContains(t, err, "rejected token again")
	})
}

func TestEngineTokenSourceRefreshesAnExpiredToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		api.set(func(a *tokenAPI) { a.expiresIn = "60" })
		cfg := tokenConfig(api)
		cfg.Auth.AccessToken = "access-1"
		cfg.Auth.Expiry = time.Now().Add(-time.Second)
		e := startEngine(t, cfg)
		tok, err := e.TokenSource().Token()
		require.NoError(t, err)
		assert.Equal(t, "access-2", tok.AccessToken, "an expired token is refreshed first")
		assert.Equal(t, 1, api.refreshCalls())
		tok2, err := e.TokenSource().Token()
		require.NoError(t, err)
		assert.Equal(t, tok.AccessToken, tok2.AccessToken)
		assert.Equal(t, 1, api.refreshCalls())

		e.TerminateSession()
		_, err = e.TokenSource().Token()
		assert.ErrorIs(t, err, errors.ErrSessionExpired)
	})
}

// openWatchStore is a store whose Watch channel is never closed, against
// the TokenStore contract.
type openWatchStore struct{ *engine.MemoryStore }

func (openWatchStore) Watch(context.Context) <-chan uint64 { return make(chan uint64) }

// A store whose Watch channel never closed used to hang Close for ever:
// Close now waits for it a bounded time, and says so in the log.
func TestCloseDoesNotHangOnAStoreThatNeverClosesItsWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		logger := zerolog.New(&logs)
		e, err := engine.New(engine.Config{BaseURL: "http://api.test", Logger: &logger,
			Auth: engine.Auth{AccessToken: "t", Store: openWatchStore{engine.NewMemoryStore()}}})
		require.NoError(t, err)
		closed := make(chan struct{})
		go func() { e.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(time.Minute):
			t.Fatal("Close hung on the store's Watch channel")
		}
		assert.Contains(t, logs.String(), "Watch channel still open")
	})
}
