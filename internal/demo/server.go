package demo

import (
	"time"

	"github.com/courier-go/courier/couriertest"
)

// Config tunes the demo API; each field is a couriertest option. The zero
// value gives tokens that never expire and endpoints that never flake.
type Config struct {
	// AccessUses is how many requests an access token serves before it
	// expires; 0 means no limit (couriertest.WithTokenUses).
	AccessUses int
	// AccessTTL is an access token's lifetime, announced as expires_in; 0
	// means no limit (couriertest.WithTokenTTL).
	AccessTTL time.Duration
	// Username and Password accepted by /auth/login; if empty, "demo".
	Username, Password string
	// FlakyPercent is the share of ids (0-100) whose first /flaky attempt
	// fails (couriertest.WithFlakyPercent).
	FlakyPercent int
	// Now is the server's clock; if nil, time.Now.
	Now func() time.Time
	// ClientID and ClientSecret are the OAuth 2.0 client /oauth/token
	// accepts, as HTTP Basic auth or form fields; if empty, "demo-client"
	// and "demo-secret".
	ClientID, ClientSecret string
	// HoldRefresh, if set, is called after a refresh has rotated its token
	// and before the answer is written: the old refresh token is already
	// spent. It may block to hold the answer back.
	HoldRefresh func()
	// RefreshAnswered, if set, is called after a refresh's answer has been
	// written and flushed.
	RefreshAnswered func()
	// Options are further couriertest options (scripted faults, a rate
	// limit, ...), applied after the fields above.
	Options []couriertest.Option
}

// options is cfg as couriertest options.
func (cfg Config) options() []couriertest.Option {
	opts := []couriertest.Option{
		couriertest.WithTokenUses(cfg.AccessUses),
		couriertest.WithTokenTTL(cfg.AccessTTL),
		couriertest.WithFlakyPercent(cfg.FlakyPercent),
		couriertest.WithClock(cfg.Now),
		couriertest.WithRefreshHold(cfg.HoldRefresh),
		couriertest.WithRefreshAnswered(cfg.RefreshAnswered),
	}
	if cfg.Username != "" || cfg.Password != "" {
		opts = append(opts, couriertest.WithLogin(or(cfg.Username, "demo"), or(cfg.Password, "demo")))
	}
	if cfg.ClientID != "" || cfg.ClientSecret != "" {
		opts = append(opts, couriertest.WithClient(or(cfg.ClientID, "demo-client"), or(cfg.ClientSecret, "demo-secret")))
	}
	return append(opts, cfg.Options...)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Stats counts what the server saw. Read it with [Server.Stats].
type Stats = couriertest.Stats

// Tokens is what /auth/login and /auth/refresh answer.
type Tokens = couriertest.Tokens

// Item is what the item endpoints answer.
type Item = couriertest.Item

// UploadedPart describes one part /upload received.
type UploadedPart = couriertest.UploadedPart

// UploadAnswer is what /upload answers.
type UploadAnswer = couriertest.UploadAnswer

// Server is the demo API, a [couriertest.API]; it is an [net/http.Handler].
// Server is safe for concurrent use.
type Server struct {
	*couriertest.API
}

// New returns a demo API configured by cfg.
func New(cfg Config) *Server {
	return &Server{couriertest.NewAPI(cfg.options()...)}
}
