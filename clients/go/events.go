package paddock

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// EventsOptions select and position an event stream.
type EventsOptions struct {
	// ID: only this sandbox's events (the cursor still counts every event).
	ID string
	// Since: replay the kept events with a greater seq first, then follow live (0: from
	// the first). Nil: start with the next event committed.
	Since *uint64
	// LastEventID is sent as the Last-Event-ID header (what an EventSource sends when it
	// reconnects); Since wins when both are set.
	LastEventID string
}

// EventStream is an open GET /v1/events. Next returns its items; Close ends it.
// Cancelling the context given to Events ends it too (Next then returns the context's
// error). Not safe for concurrent use.
type EventStream struct {
	ctx    context.Context
	body   io.ReadCloser
	sc     *bufio.Scanner
	lastID string
}

// maxEventLine bounds one line of the stream (an event is about 1 KiB).
const maxEventLine = 4 << 20

// Events opens the event stream (GET /v1/events). A cursor older than the events kept
// is a *APIError with status 410 and OldestSeq/LastSeq set.
func (c *Client) Events(ctx context.Context, opts *EventsOptions) (*EventStream, error) {
	q := url.Values{}
	hdr := http.Header{"Accept": {"text/event-stream"}}
	if opts != nil {
		if opts.ID != "" {
			q.Set("id", opts.ID)
		}
		if opts.Since != nil {
			q.Set("since", strconv.FormatUint(*opts.Since, 10))
		}
		if opts.LastEventID != "" {
			hdr.Set("Last-Event-ID", opts.LastEventID)
		}
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/events", q, hdr, nil)
	if err != nil {
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("paddock: GET /v1/events: answer of type %q, not text/event-stream", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	sc.Split(scanLines)
	return &EventStream{ctx: ctx, body: resp.Body, sc: sc}, nil
}

// LastID is the `id:` of the last item received (the seq to resume after), or "".
func (s *EventStream) LastID() string { return s.lastID }

// Close ends the stream.
func (s *EventStream) Close() error { return s.body.Close() }

// Next returns the next item: Sequenced set for an event, Lagged for `lagged`. It
// blocks until one arrives; io.EOF when the daemon ended the stream (it shuts down), the
// context's error when it was cancelled.
func (s *EventStream) Next() (*EventStreamItem, error) {
	var (
		event, id string
		data      bytes.Buffer
		hasData   bool
	)
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if len(line) == 0 {
			// Dispatch (a block without data, e.g. keep-alive comments, is none).
			if !hasData {
				event, id = "", ""
				continue
			}
			if id != "" {
				s.lastID = id
			}
			if event == "" {
				event = "message"
			}
			return decodeItem(event, id, data.Bytes())
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			event = string(value)
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				id = string(value)
			}
		}
	}
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.sc.Err(); err != nil {
		return nil, fmt.Errorf("paddock: GET /v1/events: %w", err)
	}
	return nil, io.EOF
}

func decodeItem(event, id string, data []byte) (*EventStreamItem, error) {
	it := &EventStreamItem{Event: event, ID: id, Data: append(json.RawMessage(nil), data...)}
	if event == string(EventLagged) {
		it.Lagged = &Lagged{}
		if err := json.Unmarshal(data, it.Lagged); err != nil {
			return nil, fmt.Errorf("paddock: GET /v1/events: lagged: %w", err)
		}
		return it, nil
	}
	it.Sequenced = &SequencedEvent{}
	if err := json.Unmarshal(data, it.Sequenced); err != nil {
		return nil, fmt.Errorf("paddock: GET /v1/events: event %q (id %s): %w", event, id, err)
	}
	return it, nil
}

// scanLines splits at \n, \r\n or \r, as server-sent events do.
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		switch b {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // need the next byte: \r\n or \r?
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
