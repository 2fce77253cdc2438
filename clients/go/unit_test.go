package paddock

// Tests of the client's own logic, without a daemon: the server-sent event reader, the
// union types' JSON, durations, errors.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// canned answers every request with one fixed answer.
type canned struct {
	status int
	header http.Header
	body   string
}

func (c canned) RoundTrip(req *http.Request) (*http.Response, error) {
	h := c.header
	if h == nil {
		h = http.Header{"Content-Type": {"application/json"}}
	}
	return &http.Response{StatusCode: c.status, Header: h, Body: io.NopCloser(strings.NewReader(c.body)), Request: req}, nil
}

func cannedClient(t *testing.T, a canned) *Client {
	c, err := NewTCP("http://127.0.0.1:1", "0123456789abcdef", WithHTTPClient(&http.Client{Transport: a}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEventStreamParsing(t *testing.T) {
	stream := ": keep-alive\n\n" +
		"event: started\r\nid: 5\r\ndata: {\"seq\":5,\"id\":\"a\",\"lifecycle\":\"0123456789abcdef\",\"at_ms\":7,\"type\":\"started\",\"pid\":42}\r\n\r\n" +
		"event: lagged\rdata: {\"missed\": 3}\r\r" +
		"event:restarting\nid:6\ndata: {\"seq\":6,\"id\":\"a\",\"lifecycle\":\"0123456789abcdef\",\"at_ms\":8,\n" +
		"data: \"type\":\"restarting\",\"attempt\":2,\"restart_at_ms\":900}\n\n" +
		"event: stopped\nid: 7\ndata: {\"seq\":7" // cut off: not dispatched
	c := cannedClient(t, canned{status: 200, header: http.Header{"Content-Type": {"text/event-stream"}}, body: stream})
	s, err := c.Events(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	it, err := s.Next()
	if err != nil || it.Event != "started" || it.ID != "5" || it.Sequenced == nil || it.Sequenced.Seq != 5 || *it.Sequenced.Pid != 42 || it.Sequenced.Lifecycle != "0123456789abcdef" {
		t.Fatalf("first item %+v, %v", it, err)
	}
	it, err = s.Next()
	if err != nil || it.Event != "lagged" || it.Lagged == nil || it.Lagged.Missed != 3 || it.ID != "" || s.LastID() != "5" {
		t.Fatalf("second item %+v, %v (LastID %s)", it, err, s.LastID())
	}
	it, err = s.Next()
	if err != nil || it.Sequenced == nil || it.Sequenced.Attempt != 2 || it.Sequenced.AtMs != 8 || it.Sequenced.RestartAtMs != 900 || s.LastID() != "6" {
		t.Fatalf("third item (two data lines) %+v, %v", it.Sequenced, err)
	}
	if it, err := s.Next(); err != io.EOF {
		t.Fatalf("an incomplete event at the end: %+v, %v; want io.EOF", it, err)
	}
}

func TestEventsNotAStream(t *testing.T) {
	c := cannedClient(t, canned{status: 200, body: "{}"})
	if _, err := c.Events(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "text/event-stream") {
		t.Fatalf("a JSON answer to /v1/events: %v", err)
	}
}

func TestAPIErrors(t *testing.T) {
	c := cannedClient(t, canned{status: 410, body: `{"error":"since: gone","oldest_seq":5001,"last_seq":15000}`})
	_, err := c.Events(context.Background(), &EventsOptions{Since: Ptr(uint64(12))})
	var e *APIError
	if !errors.As(err, &e) || e.StatusCode != 410 || e.Message != "since: gone" || *e.OldestSeq != 5001 || *e.LastSeq != 15000 || e.Path != "/v1/events" {
		t.Fatalf("410: %#v", err)
	}
	c = cannedClient(t, canned{status: 503, header: http.Header{"Retry-After": {"30"}, "Content-Type": {"application/json"}}, body: `{"error":"the node is draining"}`})
	_, err = c.Create(context.Background(), SandboxSpec{ID: "x", Command: "true"})
	if !errors.As(err, &e) || e.RetryAfter != 30*time.Second || StatusCode(err) != 503 {
		t.Fatalf("503: %#v", err)
	}
	c = cannedClient(t, canned{status: 502, header: http.Header{}, body: "bad gateway\n"})
	_, err = c.Node(context.Background())
	if !errors.As(err, &e) || e.Message != "bad gateway" || !strings.Contains(e.Error(), "502") {
		t.Fatalf("a non-JSON error: %#v", err)
	}
}

func TestUnionsJSON(t *testing.T) {
	for _, tc := range []struct {
		v    interface{}
		want string
	}{
		{NetworkHost(), `"host"`},
		{NetworkNamed("blue"), `{"named":"blue"}`},
		{NetworkVeth(VethSpec{NAT: true}), `{"veth":{"nat":true}}`},
		{StdioSpec{Stdout: StdioLog(), Stdin: StdioFile("/in")}, `{"stdin":{"file":"/in"},"stdout":"log"}`},
		{UserSpec{UID: &IdOrName{ID: 1000}, GID: &IdOrName{Name: "staff"}}, `{"uid":1000,"gid":"staff"}`},
		{RlimitRange{Soft: LimitValue{Value: 1024}, Hard: &LimitValue{Unlimited: true}}, `{"soft":1024,"hard":"unlimited"}`},
		{SeccompSpec{Builtin: SeccompDefault}, `"default"`},
		{SeccompSpec{Profile: &SeccompProfile{DefaultAction: "SCMP_ACT_ALLOW", Extra: map[string]json.RawMessage{"architectures": json.RawMessage(`["SCMP_ARCH_X86_64"]`)},
			Syscalls: []SeccompRule{{Names: []string{"ptrace"}, Action: "SCMP_ACT_ERRNO", Extra: map[string]json.RawMessage{"errnoRet": json.RawMessage(`1`)}}}}},
			`{"architectures":["SCMP_ARCH_X86_64"],"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ERRNO","errnoRet":1,"names":["ptrace"]}]}`},
		{UpdateRequest{Limits: LimitsUpdate{MemoryMax: Ptr(uint64(1 << 30)), Lift: []string{"pids_max", "cpus"}}}, `{"limits":{"cpus":null,"memory_max":1073741824,"pids_max":null}}`},
		{DrainRequest{Stop: true, Grace: (*Duration)(Ptr(1500 * time.Millisecond))}, `{"stop":true,"grace":"1500ms"}`},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil || string(b) != tc.want {
			t.Errorf("%T: %s, %v; want %s", tc.v, b, err, tc.want)
			continue
		}
		// And back.
		back := newOf(tc.v)
		if err := json.Unmarshal(b, back); err != nil {
			t.Errorf("%T: decode %s: %v", tc.v, b, err)
			continue
		}
		if again, _ := json.Marshal(back); string(again) != tc.want && !strings.Contains(tc.want, "null") {
			t.Errorf("%T: round trip %s, want %s", tc.v, again, tc.want)
		}
	}
	for _, bad := range []interface{}{Network{}, Network{Mode: "host", Named: "x"}, StdioTarget{}, SeccompSpec{},
		LimitsUpdate{Lift: []string{"nope"}}, LimitsUpdate{PidsMax: Ptr(uint64(1)), Lift: []string{"pids_max"}}} {
		if b, err := json.Marshal(bad); err == nil {
			t.Errorf("%#v encoded as %s, want an error", bad, b)
		}
	}
	var r RlimitsSpec
	if err := json.Unmarshal([]byte(`{"nproc":{"soft":5},"nofile":{"soft":1,"hard":"infinity"}}`), &r); err != nil || len(r) != 2 || r[0].Name != "nofile" || !r[0].Hard.Unlimited || r[1].Soft.Value != 5 {
		t.Fatalf("rlimits by name: %+v, %v", r, err)
	}
}

func newOf(v interface{}) interface{} {
	switch v.(type) {
	case *Network:
		return &Network{}
	case StdioSpec:
		return &StdioSpec{}
	case UserSpec:
		return &UserSpec{}
	case RlimitRange:
		return &RlimitRange{}
	case SeccompSpec:
		return &SeccompSpec{}
	case UpdateRequest:
		return &UpdateRequest{}
	case DrainRequest:
		return &DrainRequest{}
	}
	panic("newOf")
}

func TestDurations(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0", time.Nanosecond: "1ms", 1500 * time.Millisecond: "1500ms", time.Hour: "3600000ms"} {
		if got := Duration(d).String(); got != want {
			t.Errorf("Duration(%v) = %s, want %s", d, got, want)
		}
	}
	for s, want := range map[string]time.Duration{"10s": 10 * time.Second, "500ms": 500 * time.Millisecond, "2m": 2 * time.Minute, "3min": 3 * time.Minute, "1.5h": 90 * time.Minute, "0": 0, "7": 7 * time.Second, ".5s": 500 * time.Millisecond} {
		if got, err := ParseDuration(s); err != nil || time.Duration(got) != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", s, time.Duration(got), err, want)
		}
	}
	for _, s := range []string{"", "s", "-1s", "1e3s", "1.2.3s", "10 s", "5d"} {
		if _, err := ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", s)
		}
	}
}

func TestNewTCPRefuses(t *testing.T) {
	for _, u := range []string{"127.0.0.1:7070", "unix:///run/x", "http://h:1/v1", "http://h:1?x=1"} {
		if _, err := NewTCP(u, "0123456789abcdef"); err == nil {
			t.Errorf("NewTCP(%q) succeeded", u)
		}
	}
	if c, err := NewTCP("http://[::1]:7070/", "0123456789abcdef"); err != nil || c.base != "http://[::1]:7070" {
		t.Errorf("NewTCP with a trailing slash: %v", err)
	}
}
