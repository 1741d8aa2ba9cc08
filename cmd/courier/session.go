package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
)

// sessionOptions are the flags that say where the tokens live and how new
// ones are obtained.
type sessionOptions struct {
	grant, tokenURL string
	scopes          []string
}

func sessionFlags(fs *pflag.FlagSet, o *sessionOptions) {
	fs.StringVar(&o.grant, "grant", "refresh_token", "how new access tokens are obtained: refresh_token, or client_credentials (COURIER_CLIENT_ID and COURIER_CLIENT_SECRET at --token-url)")
	fs.StringVar(&o.tokenURL, "token-url", "", "the OAuth 2.0 token endpoint: an absolute URL, or a path, which joins --base-url's path as request paths do; the refresh is sent as the OAuth 2.0 form")
	fs.StringArrayVar(&o.scopes, "scope", nil, "scope to ask for with --grant client_credentials (repeatable, or space-separated)")
}

// auth fills a's tokens, store and refresh from the flags and the
// environment. With --token-file the file is the session's store: read at
// start, written after every refresh (durably, before the requests that
// waited are replayed), and shared with every other courier using it.
func (o *fetchOptions) auth(a *engine.Auth, stderr io.Writer) error {
	s := o.sess
	var rc *engine.RefreshConfig
	switch s.grant {
	case "refresh_token":
		switch {
		case o.refreshPath != "" && s.tokenURL != "":
			return fmt.Errorf("--refresh-path and --token-url name the same endpoint; give one")
		case o.refreshPath != "":
			rc = &engine.RefreshConfig{Path: o.refreshPath, Form: o.refreshForm}
		case s.tokenURL != "":
			rc = &engine.RefreshConfig{Path: s.tokenURL, Form: true}
		}
		if len(s.scopes) > 0 {
			return fmt.Errorf("--scope goes with --grant client_credentials")
		}
	case "client_credentials":
		if s.tokenURL == "" {
			return fmt.Errorf("--grant client_credentials needs --token-url")
		}
		if o.refreshPath != "" {
			return fmt.Errorf("--grant client_credentials uses --token-url, not --refresh-path")
		}
		if os.Getenv("COURIER_CLIENT_ID") == "" || os.Getenv("COURIER_CLIENT_SECRET") == "" {
			return fmt.Errorf("--grant client_credentials needs COURIER_CLIENT_ID and COURIER_CLIENT_SECRET in the environment")
		}
		rc = &engine.RefreshConfig{Path: s.tokenURL, Grant: engine.GrantClientCredentials}
		for _, sc := range s.scopes {
			rc.Scopes = append(rc.Scopes, strings.Fields(sc)...)
		}
	default:
		return fmt.Errorf("--grant %q: want refresh_token or client_credentials", s.grant)
	}
	if s.tokenURL != "" {
		if _, err := url.Parse(s.tokenURL); err != nil {
			// url.Parse's error quotes the whole URL, query and all: say
			// what is wrong without it.
			return fmt.Errorf("--token-url is not a valid URL: %v", urlErr(err))
		}
	}
	if o.refreshPath != "" {
		if _, err := url.Parse(o.refreshPath); err != nil {
			return fmt.Errorf("--refresh-path is not a valid path or URL: %v", urlErr(err))
		}
	}
	if rc != nil {
		if !isToken(o.refreshMethod) {
			return fmt.Errorf("--refresh-method %q: not an HTTP method (POST, PUT...)", o.refreshMethod)
		}
		if o.accessField == "" {
			return fmt.Errorf("--access-token-field is empty: want the refresh answer's field that holds the access token")
		}
		if o.refreshField == "" {
			return fmt.Errorf("--refresh-token-field is empty: want the field that holds the refresh token")
		}
		rc.Method = strings.ToUpper(o.refreshMethod)
		rc.AccessTokenField, rc.RefreshTokenField = o.accessField, o.refreshField
		rc.ClientID, rc.ClientSecret = os.Getenv("COURIER_CLIENT_ID"), os.Getenv("COURIER_CLIENT_SECRET")
		switch o.clientAuth {
		case "basic":
			rc.ClientAuth = engine.ClientAuthBasic
		case "post":
			rc.ClientAuth = engine.ClientAuthPost
		default:
			return fmt.Errorf("--client-auth %q: want basic or post", o.clientAuth)
		}
		if o.refreshBody != "" {
			if err := json.Unmarshal([]byte(o.refreshBody), &rc.Body); err != nil || rc.Body == nil {
				return fmt.Errorf("--refresh-body: want a JSON object: %v", err)
			}
		}
		a.Refresh = rc
	}

	if o.tokenFile == "" {
		a.AccessToken, a.RefreshToken = os.Getenv("COURIER_TOKEN"), os.Getenv("COURIER_REFRESH_TOKEN")
		// Nothing would keep a refresh's answer once the process exits:
		// stopping need not wait for one.
		a.CloseGrace = -1
		return nil
	}
	store, err := engine.NewFileStore(o.tokenFile)
	if err != nil {
		return fmt.Errorf("--token-file: %v", err)
	}
	// Read it now, to refuse a missing or broken file before any request.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := store.Load(ctx)
	if err != nil {
		return fmt.Errorf("--token-file: %v", err)
	}
	if v.Generation == 0 && s.grant != "client_credentials" {
		if _, err := os.Stat(o.tokenFile); err != nil {
			return fmt.Errorf("--token-file: %v", err)
		}
		return fmt.Errorf("--token-file %s: holds no tokens", o.tokenFile)
	}
	warnExposed(o.tokenFile, stderr)
	o.saver = newSavingStore(store, o.tokenFile, store.LockPath(), o.timeout, stderr)
	a.Store = o.saver
	// A refresh in flight when fetch stops may have rotated the token:
	// its answer is waited for (one attempt, bounded by --timeout, and
	// its write), then saved in the file.
	a.CloseGrace = o.closeGrace()
	return nil
}

// warnExposed warns when the token file (its target, for a link) can be
// read or written by others than its owner: it holds a live session. The
// first write makes it 0600; until then, the user should know.
func warnExposed(path string, stderr io.Writer) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	fmt.Fprintf(stderr, "courier fetch: warning: --token-file %s has mode %04o: others can read the live tokens it holds (chmod 600 it; courier writes it 0600)\n",
		path, fi.Mode().Perm())
}

// closeGrace is how long stopping waits for a refresh in flight to be
// answered and saved: one attempt's --timeout and a second for the write.
func (o *fetchOptions) closeGrace() time.Duration { return o.timeout + time.Second }

// closeEngine closes e. When a refresh is in flight, its answer is waited
// for (at most closeGrace) and saved to --token-file; fetch says so, as
// the wait can be long.
func (o *fetchOptions) closeEngine(e *engine.Engine, stderr io.Writer) {
	if o.saver.refreshing() {
		fmt.Fprintf(stderr, "courier fetch: waiting for the token refresh in flight to be saved to --token-file %s (at most %s; a second signal exits at once, leaving the file as it is)\n",
			o.tokenFile, o.closeGrace())
	}
	e.Close()
}

// saveTokens starts a new session in the token file at path, replacing
// whatever it held, durably and readable by its owner only.
func saveTokens(path string, t engine.Tokens) error {
	store, err := engine.NewFileStore(path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		v, err := store.Load(ctx)
		if err != nil {
			return err
		}
		if _, ok, err := store.CompareAndSwap(ctx, v.Generation, t); ok || err != nil {
			return err
		}
	}
}

// isToken reports whether s is an HTTP token (RFC 9110 section 5.6.2), as
// a method is.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
