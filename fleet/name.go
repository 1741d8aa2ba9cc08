package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// MaxNameLen is the longest fleet name [CheckName] accepts.
const MaxNameLen = 64

// DefaultName derives a fleet's name from the API's base URL and the OAuth
// client id, so processes that talk to the same API as the same client share
// a fleet without being told. It is a hash ("f-" and 16 hex digits): key
// names in Redis are visible to anyone who can run KEYS, and a base URL or a
// client id may carry something that should not be.
func DefaultName(baseURL, clientID string) string {
	h := sha256.Sum256([]byte(baseURL + "\x00" + clientID))
	return "f-" + hex.EncodeToString(h[:8])
}

// CheckName reports whether name can name a fleet: 1 to [MaxNameLen]
// letters, digits, '.', '_', ':' or '-'. Every Redis key of a fleet embeds its
// name, so it must not hold braces (the cluster hash tag), spaces or
// anything a log would mangle. A batch's name follows the same rule.
func CheckName(name string) error { return checkName("fleet name", name) }

// checkName is [CheckName] for a name of the given kind ("fleet name",
// "batch name"), which its errors say.
func checkName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s is empty", kind)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%s is %d bytes long; at most %d", kind, len(name), MaxNameLen)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-', r == ':':
		default:
			return fmt.Errorf("%s has %q at byte %d; use letters, digits, '.', '_', ':' and '-'", kind, r, i)
		}
	}
	return nil
}

// keyPrefix is the prefix of every key and channel of the named fleet. The
// name is a hash tag, so in Redis Cluster every key of a fleet is in one
// slot and its scripts can touch several of them.
func keyPrefix(name string) string { return "courier:{" + name + "}:" }
