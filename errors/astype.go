//go:build go1.26

package errors

import stderrors "errors"

// AsType is shorthand for the standard library's errors.AsType: it finds
// the first error in err's tree that has type E and returns it. It is
// built with Go 1.26 and later, which added errors.AsType; the rest of the
// package builds with Go 1.25.
func AsType[E error](err error) (E, bool) { return stderrors.AsType[E](err) }
