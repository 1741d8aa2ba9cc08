package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// byteSize is a size flag: a count of bytes, or a number with a KiB, MiB or
// GiB suffix ("512", "64KiB", "16MiB", "1GiB"). It is the one parser of
// every size flag (--max-line, --max-body), so they read alike.
type byteSize int64

// sizeUnits are the suffixes byteSize accepts, largest first.
var sizeUnits = []struct {
	suffix string
	bytes  int64
}{
	{"GiB", 1 << 30},
	{"MiB", 1 << 20},
	{"KiB", 1 << 10},
}

// parseSize reads s as a byteSize. The suffix is case-insensitive; the size
// must be at least 1 byte.
func parseSize(s string) (byteSize, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if len(num) > len(u.suffix) && strings.EqualFold(num[len(num)-len(u.suffix):], u.suffix) {
			num, mult = strings.TrimSpace(num[:len(num)-len(u.suffix)]), u.bytes
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("want a number of bytes, or one with a KiB, MiB or GiB suffix")
	case n < 1:
		return 0, fmt.Errorf("must be at least 1 byte")
	case n > math.MaxInt64/mult:
		return 0, fmt.Errorf("too large")
	}
	return byteSize(n * mult), nil
}

// String writes the size in the largest unit that divides it.
func (b byteSize) String() string {
	for _, u := range sizeUnits {
		if int64(b) >= u.bytes && int64(b)%u.bytes == 0 {
			return strconv.FormatInt(int64(b)/u.bytes, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Set implements pflag.Value.
func (b *byteSize) Set(s string) error {
	v, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// Type implements pflag.Value.
func (b *byteSize) Type() string { return "size" }
