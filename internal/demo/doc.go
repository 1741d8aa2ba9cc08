// Package demo is courier's demo API: a loopback HTTP server with the
// behaviours an authenticated API client must survive. Access tokens expire
// after a number of requests or a time; refresh tokens rotate, and a reused
// one revokes its whole session; some endpoints flake with 503 and 429
// (Retry-After in seconds and as a date), reset connections or send their
// body slowly; an upload endpoint checksums every part; a redirect endpoint
// points anywhere.
//
// It is a thin user of package couriertest, whose API it serves with the
// settings of a Config. It serves `courier demo` and `courier serve-demo`,
// the examples and the tests. Endpoints (all JSON; all but /auth/*, /healthz and /stats need a
// bearer token):
//
//	POST /auth/login      {"username","password"} -> tokens
//	POST /auth/refresh    {"refresh_token"} or the OAuth 2.0 form -> tokens
//	POST /oauth/token     OAuth 2.0 token endpoint for a confidential client
//	                      (Basic or form client auth): grant_type
//	                      refresh_token or client_credentials
//	GET  /items/{id}      one item
//	GET  /items?page=N    a page of items
//	POST /items           create (an Idempotency-Key makes it apply once)
//	GET  /flaky/{id}      fails its first attempt for some ids (503/429)
//	GET  /reset/{id}      resets the connection on its first attempt
//	GET  /slow/{id}?ms=N  sends its body in pieces over N ms
//	POST /upload          multipart; answers each part's size and SHA-256
//	GET  /redirect?to=U   302 to U
//	GET  /healthz, /stats
package demo
