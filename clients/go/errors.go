package paddock

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// APIError is an answer of the daemon other than 2xx.
type APIError struct {
	// StatusCode is the HTTP status (404, 409, …).
	StatusCode int
	// Message is the daemon's `error`; for a body that is not the API's JSON, its text.
	Message string
	// Method and Path are the request's.
	Method, Path string
	// RetryAfter is the Retry-After header's value (a create while draining: 503), or 0.
	RetryAfter time.Duration
	// OldestSeq and LastSeq are set for a 410 from the event stream (EventsGone): re-list
	// the sandboxes, then follow with since=LastSeq.
	OldestSeq *uint64
	LastSeq   *uint64
}

func (e *APIError) Error() string {
	return fmt.Sprintf("paddock: %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

func newAPIError(method, path string, resp *http.Response) *APIError {
	e := &APIError{StatusCode: resp.StatusCode, Method: method, Path: path}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body struct {
		Error     *string `json:"error"`
		OldestSeq *uint64 `json:"oldest_seq"`
		LastSeq   *uint64 `json:"last_seq"`
	}
	if err := json.Unmarshal(b, &body); err == nil && body.Error != nil {
		e.Message = *body.Error
		e.OldestSeq, e.LastSeq = body.OldestSeq, body.LastSeq
	} else {
		e.Message = strings.TrimSpace(string(b))
		if e.Message == "" {
			e.Message = "(no message)"
		}
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	return e
}

// StatusCode is err's API status if it is (or wraps) a *APIError, else 0.
func StatusCode(err error) int {
	var e *APIError
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// IsNotFound: no such sandbox (404).
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// IsConflict: the operation does not apply in the sandbox's state, or the ID is live (409).
func IsConflict(err error) bool { return StatusCode(err) == http.StatusConflict }
