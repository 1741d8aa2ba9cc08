package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/courier-go/courier/internal/redact"

	"github.com/redis/go-redis/v9"
)

// PasswordEnv is the environment variable that holds the Redis password. It
// is the way to pass a password without writing it in a URL on a command
// line, where other users of the machine can read it.
const PasswordEnv = "COURIER_REDIS_PASSWORD"

// Connection defaults that [ParseURL] sets unless the URL's query sets them.
// They are short, because every fleet operation has a local fallback and
// waiting long on an unreachable Redis helps nobody.
const (
	DefaultDialTimeout  = 2 * time.Second
	DefaultReadTimeout  = time.Second
	DefaultWriteTimeout = time.Second
)

// URLError reports a Redis URL that cannot be used. Its message names what is
// wrong; the URL in it has been through [redact.RawURL], so it holds
// no user info, password or query. It is a plain value, made by
// [ParseURL].
type URLError struct {
	URL    string // the URL, redacted by [redact.RawURL]
	Reason string
}

func (e *URLError) Error() string {
	return fmt.Sprintf("redis URL %q: %s", e.URL, e.Reason)
}

// ParseURL turns a Redis URL into client options:
//
//	redis://[user[:password]@]host[:port][/db][?option=value...]
//	rediss://...  (the same, over TLS)
//	unix://[user[:password]@]/path/to/socket[?db=N&...]
//
// The query takes go-redis's options (dial_timeout, read_timeout, pool_size,
// ...). The password comes from the environment variable [PasswordEnv] when
// it is set, and from the URL otherwise. Errors never contain the password.
//
// Unless the URL says otherwise, ParseURL sets short timeouts
// ([DefaultDialTimeout] and friends), lets contexts bound every command, and
// turns off go-redis's own retries: a script that ran but whose answer was
// lost must not silently run twice.
func ParseURL(raw string) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error quotes the whole URL, password included.
		return nil, &URLError{URL: redact.RawURL(raw), Reason: "not a URL"}
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
	case "":
		return nil, &URLError{URL: redact.RawURL(raw), Reason: "no scheme; want redis://, rediss:// or unix://"}
	default:
		return nil, &URLError{URL: redact.RawURL(raw), Reason: fmt.Sprintf("scheme %q; want redis://, rediss:// or unix://", u.Scheme)}
	}
	if u.Scheme != "unix" && u.Host == "" {
		return nil, &URLError{URL: redact.RawURL(raw), Reason: "no host"}
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		// go-redis's messages name the bad part (scheme, path, db,
		// option), never the user info.
		reason := strings.TrimPrefix(err.Error(), "redis: ")
		if pw, ok := u.User.Password(); ok && pw != "" {
			reason = strings.ReplaceAll(reason, pw, "xxxxx")
		}
		return nil, &URLError{URL: redact.RawURL(raw), Reason: reason}
	}
	if pw := os.Getenv(PasswordEnv); pw != "" {
		opts.Password = pw
	}
	q := u.Query()
	if !q.Has("dial_timeout") {
		opts.DialTimeout = DefaultDialTimeout
	}
	if !q.Has("read_timeout") {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if !q.Has("write_timeout") {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if !q.Has("max_retries") {
		opts.MaxRetries = -1
	}
	// One dial per try: the fleet's callers retry at their own pace, and
	// know when to fall back.
	opts.DialerRetries = 1
	opts.ContextTimeoutEnabled = true
	// No CLIENT SETINFO round trip on every new connection.
	opts.DisableIdentity = true
	return opts, nil
}

// NewClient returns a Redis client for the URL (see [ParseURL]). It does not
// connect: the first command does, and [redis.Client.Ping] checks the
// connection. The caller closes the client.
func NewClient(raw string) (*redis.Client, error) {
	opts, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

// TLSFiles names the PEM files of a TLS connection to Redis (a rediss://
// URL), for [TLSFiles.Apply]. It is a plain value; the zero value names no
// file and changes nothing.
type TLSFiles struct {
	// CA is a file of CA certificates that Redis's certificate must chain
	// to, instead of the system's. If empty, the system's CAs.
	CA string
	// Cert and Key are the client's certificate and its private key, for
	// a Redis that asks clients for one (tls-auth-clients). Both or
	// neither.
	Cert, Key string
}

// Apply sets the TLS configuration of opts (from [ParseURL]) to use the
// files. It fails, naming the file, when one cannot be read or holds no
// certificate, when only one of Cert and Key is given, and when opts is
// not for TLS (a redis:// or unix:// URL) while a file is given.
func (f TLSFiles) Apply(opts *redis.Options) error {
	if f == (TLSFiles{}) {
		return nil
	}
	if opts.TLSConfig == nil {
		return fmt.Errorf("TLS files are given for a connection without TLS; use a rediss:// URL")
	}
	cfg := opts.TLSConfig.Clone()
	if f.CA != "" {
		pemData, err := os.ReadFile(f.CA)
		if err != nil {
			return fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return fmt.Errorf("CA file %s: no PEM certificate in it", f.CA)
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.Cert != "" && f.Key != "":
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			// crypto/tls's message names neither file, and never
			// quotes the key.
			return fmt.Errorf("client certificate %s and key %s: %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case f.Cert != "" || f.Key != "":
		return fmt.Errorf("a client certificate needs both its certificate file and its key file")
	}
	opts.TLSConfig = cfg
	return nil
}

// Unreachable reports whether err says that Redis could not be reached or
// did not answer in time (a refused or dropped connection, a timeout, a
// Redis still loading its data or busy with a script): a failure that
// waiting may end. An answer from Redis (a wrong password, NOAUTH, an ACL
// refusal, OOM) and a TLS failure (a certificate that is not trusted or
// not for this host, a server that does not speak TLS or refused the
// client's certificate) are not: no wait fixes them, and the fleet fails
// at once with their cause.
func Unreachable(err error) bool { return err != nil && isConnError(err) }
