package engine

import (
	"context"
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

// Tokens is a session's credentials, a plain value. The zero value is no
// session: SetTokens(Tokens{}) clears the tokens but keeps the engine
// accepting requests.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	// Expiry is when the access token stops working; zero when unknown.
	Expiry time.Time
	// ExpiresIn is the token's lifetime from when it was issued, used when
	// Expiry is zero (token parsers report lifetimes, not instants).
	ExpiresIn time.Duration
}

// Refresher obtains new tokens from a refresh token, for APIs whose refresh
// does not fit [RefreshConfig]. An error that matches ErrSessionExpired ends
// the session; any other error is treated as transient and retried. An
// engine makes one refresh at a time; a Refresher that several engines
// share must be safe for concurrent use. A nil Refresher in
// [Auth.Refresher] means none.
type Refresher func(ctx context.Context, refreshToken string) (Tokens, error)

// TokenParser reads a refresh endpoint's 2xx answer. An error ends the
// session: an answer that cannot be parsed will not parse on retry either.
// An engine parses one answer at a time; a TokenParser that several
// engines share must be safe for concurrent use. A nil TokenParser in
// [RefreshConfig.Parser] means [FieldTokenParser] of the configured fields.
type TokenParser func(body []byte) (Tokens, error)

// AuthFailedFunc reports whether an answer means the token was rejected and
// a refresh should be tried. It is called from several goroutines at once,
// so it must be safe for concurrent use. A nil AuthFailedFunc in
// [Auth.AuthFailed] means [DefaultAuthFailed].
type AuthFailedFunc func(status int, header http.Header) bool

// DefaultAuthFailed treats 401 as a rejected token. 403 means the token is
// valid but not allowed, so it does not trigger a refresh.
func DefaultAuthFailed(status int, _ http.Header) bool { return status == http.StatusUnauthorized }

// Auth configures how tokens are attached and refreshed. The zero value
// sends no token and treats a 401 as final. It is a plain value, part of a
// [Config].
type Auth struct {
	// AccessToken and RefreshToken start the first session. Both may be
	// empty and set later with SetTokens.
	AccessToken  string
	RefreshToken string
	// Expiry of the first access token, when known; it enables a proactive
	// refresh shortly before.
	Expiry time.Time

	// Store is the source of truth for the tokens, shared by every engine
	// that uses the same store (see [TokenStore]). If nil, the engine uses
	// a [MemoryStore] of its own. When the store already holds a session
	// (a generation above 0) it wins over AccessToken, RefreshToken and
	// Expiry; when it is empty, they are written to it.
	Store TokenStore
	// LockLease is the lease this engine asks for when it takes Store's
	// refresh lock, renewed every third of it while its refresh runs: a
	// holder that dies without releasing the lock keeps the other engines
	// from refreshing for at most this long. If zero, DefaultLockLease.
	// Shorter leases hand a dead holder's refresh over sooner, at the cost
	// of more renewals; every engine of a fleet should use the same one.
	// An engine waits for the lock at most LockLease plus Config.Timeout
	// (a holder that stopped without dying, say); then the requests
	// waiting for the refresh fail with ErrRefreshFailed.
	LockLease time.Duration

	// Header carries the token. If empty, "Authorization".
	Header string
	// Scheme precedes the token. If empty, "Bearer" when Header is
	// Authorization and nothing otherwise (X-API-Key: <token>).
	Scheme string

	// Refresh configures an HTTP refresh endpoint. Refresher replaces it
	// with a function, and TokenSource with an oauth2.TokenSource. Set at
	// most one; with none, a 401 is final.
	Refresh   *RefreshConfig
	Refresher Refresher
	// TokenSource provides the tokens (golang.org/x/oauth2): the engine
	// calls its Token once per stale token (a 401, or a known expiry) and
	// at the start when AccessToken is empty, and leaves refreshing to it.
	// A Token that returns the rejected token again fails the requests
	// that waited with ErrRefreshFailed; a *oauth2.RetrieveError with
	// status 400, 401 or 403 ends the session. Token takes no context: it
	// must not block forever (its HTTP client should have a timeout).
	TokenSource oauth2.TokenSource

	// AuthFailed decides which answers trigger a refresh. If nil,
	// DefaultAuthFailed.
	AuthFailed AuthFailedFunc

	// CloseGrace bounds how long Close waits for a token refresh already
	// on its way to the server: the server may have rotated the refresh
	// token, so its answer is worth storing. Once the grace has passed,
	// Close abandons the refresh (its call is cancelled) and logs a
	// warning that the rotated token may be lost. Shutdown is not bounded
	// by it: it waits for the refresh until its ctx ends. If zero,
	// DefaultCloseGrace; if negative, Close abandons a refresh at once.
	// A TokenSource's Token, which takes no context, cannot be cancelled:
	// Close waits for it to return.
	CloseGrace time.Duration

	// RefreshBefore is how long before a known expiry the token is refreshed
	// proactively. If zero, a tenth of the token's lifetime, at most 30s.
	// Each token is refreshed ahead of its expiry at most once, and never
	// sooner than a second after the previous refresh. Once the expiry has
	// passed the token is not sent again: the next request that would carry
	// it waits for a refresh, as requests do after a 401. An idle engine does
	// not refresh an expired token until a request needs it.
	RefreshBefore time.Duration

	// OnSessionExpired is called once each time a session ends, whether the
	// refresh token was refused or TerminateSession was called.
	OnSessionExpired func()
	// OnTokenRefreshed is called after each refresh this engine made, with
	// the new tokens, once they are stored in Store (or failed to be), so
	// they can be persisted elsewhere too. It runs on the engine's hook
	// goroutine. Tokens adopted from the store, written by another engine,
	// do not call it.
	OnTokenRefreshed func(Tokens)
}

// DefaultCloseGrace is how long Close waits for a token refresh in
// flight when [Auth.CloseGrace] is zero.
const DefaultCloseGrace = 2 * time.Second

// ClientAuth says how OAuth 2.0 client credentials are sent with a refresh.
// The zero value is [ClientAuthBasic].
type ClientAuth int

const (
	// ClientAuthBasic sends client credentials as HTTP Basic auth.
	ClientAuthBasic ClientAuth = iota
	// ClientAuthPost sends them as client_id and client_secret form fields.
	ClientAuthPost
)

// Grant names the OAuth 2.0 grant a [RefreshConfig] asks the token
// endpoint for. The zero value, "", means [GrantRefreshToken].
type Grant string

const (
	// GrantRefreshToken trades the refresh token for new tokens (RFC 6749
	// section 6). It is the default.
	GrantRefreshToken Grant = "refresh_token"
	// GrantClientCredentials asks for an access token with the client's
	// own credentials (RFC 6749 section 4.4), for machine-to-machine APIs:
	// there is no refresh token, and a new access token is fetched with
	// ClientID and ClientSecret when the old one expires or is rejected.
	GrantClientCredentials Grant = "client_credentials"
)

// RefreshConfig describes a refresh endpoint. Only Path is required: the
// zero value of every other field is its documented default, and [New]
// refuses the zero RefreshConfig for its empty Path. It is a plain value:
// New keeps a copy of its own, Headers, Scopes and Body included (though
// not of the values Body holds).
type RefreshConfig struct {
	// Path of the refresh endpoint. Required. It is resolved as request
	// paths are: a path, with or without a leading "/", joins BaseURL's
	// path (BaseURL https://api.example.com/v1 and Path /auth/refresh give
	// https://api.example.com/v1/auth/refresh), keeping BaseURL's query;
	// an absolute URL is taken as it is, so give one for an endpoint
	// outside BaseURL's path (https://api.example.com/auth/refresh). It
	// may name another origin, such as an authorization server's token
	// endpoint; Config.Headers are then not sent with it. Errors of a
	// refresh name the URL tried, without its query.
	Path string
	// Grant is what the refresh asks for. If empty, GrantRefreshToken.
	// GrantClientCredentials always sends the OAuth 2.0 form (Form is
	// implied), needs ClientID, and ignores any refresh token.
	Grant Grant
	// Scopes, when set, are sent space-separated as the form's scope field.
	Scopes []string
	// Method; if empty, POST.
	Method string
	// Body holds extra fields sent with the refresh token, as JSON fields,
	// or as form fields when Form is set.
	Body map[string]any
	// Headers sent with the refresh call.
	Headers http.Header
	// Form sends the refresh as RFC 6749 section 6 does:
	// grant_type=refresh_token&refresh_token=... form-encoded. Otherwise a
	// JSON object with the Body fields and RefreshTokenField is sent.
	Form bool
	// ClientID and ClientSecret, when set, are sent as ClientAuth says.
	ClientID     string
	ClientSecret string
	ClientAuth   ClientAuth
	// AccessTokenField and RefreshTokenField name the JSON fields of the
	// answer (and RefreshTokenField the request field). If empty,
	// "access_token" and "refresh_token".
	AccessTokenField  string
	RefreshTokenField string
	// Parser reads the answer. If nil, a parser for RFC 6749 section 5.1
	// answers using the two field names above.
	Parser TokenParser
	// MaxAttempts bounds tries on transient failures (network errors, 5xx,
	// 429). If zero, DefaultRefreshAttempts.
	MaxAttempts int
}

// firstGen is the generation of the tokens an engine starts with.
const firstGen uint64 = 1

// tokenSnap is the published token state that workers read without a round
// trip to the actor. It is immutable once published.
type tokenSnap struct {
	access string
	header string    // the auth header's value (scheme and token), "" without a token
	gen    uint64    // bumped by every refresh, SetTokens and termination
	expiry time.Time // when access expires; zero when unknown
}

// snapshot builds the published token state for access.
func (s *settings) snapshot(access string, gen uint64, expiry time.Time) *tokenSnap {
	t := &tokenSnap{access: access, gen: gen, expiry: expiry}
	if access != "" {
		t.header = s.authPrefix + access
	}
	return t
}

// canRefresh reports whether a rejected token can be refreshed at all.
func (s *settings) canRefresh() bool {
	return s.Auth.Refresh != nil || s.Auth.Refresher != nil || s.Auth.TokenSource != nil
}

// needsRefreshToken reports whether a refresh needs a refresh token: not
// for the client-credentials grant, nor for a token source.
func (s *settings) needsRefreshToken() bool {
	if s.Auth.TokenSource != nil {
		return false
	}
	return s.Auth.Refresh == nil || s.Auth.Refresh.Grant != GrantClientCredentials
}

// refreshBound bounds one refresh with its retries: each attempt's
// timeout and the longest pauses between them.
func (s *settings) refreshBound() time.Duration {
	attempts := DefaultRefreshAttempts
	if s.Auth.Refresh != nil {
		attempts = s.Auth.Refresh.MaxAttempts
	}
	return time.Duration(attempts)*(s.Timeout+s.Retry.MaxDelay) + s.Timeout
}
