package contract

import "time"

// Duration is a Go duration string such as "24h" or "90s". It stays a string until
// validation, so a malformed value is reported with its field name instead of
// failing the decoding of the whole request.
type Duration string

// Parse returns the duration; the empty string is zero.
func (d Duration) Parse() (time.Duration, error) {
	if d == "" {
		return 0, nil
	}
	return time.ParseDuration(string(d))
}

// Or returns the parsed duration, or def when it is empty or malformed (callers
// validate first).
func (d Duration) Or(def time.Duration) time.Duration {
	v, err := d.Parse()
	if err != nil || v == 0 {
		return def
	}
	return v
}
