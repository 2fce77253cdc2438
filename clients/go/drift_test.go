package paddock

// The drift check: the committed OpenAPI document (../../crates/paddock/openapi.json,
// which `cargo test -p paddock --test openapi` keeps equal to the daemon's) against this
// client. It fails when
//   - an operation (method + path) of the document is not called by any client method,
//     or a client method calls one the document lacks;
//   - a query parameter or header of an operation is not sent by its client method, or
//     the client sends one the document lacks;
//   - the JSON member names of a Go type differ from its schema's properties (object
//     schemas, the variants of one-of unions, all-of compositions), a schema object with
//     properties has no Go type, or a required property is `omitempty` in Go;
//   - the members of an all-of composition share a property (the object would carry
//     the key twice);
//   - the values of an enum differ from the Go constants.
// No daemon is needed.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// openapiPath is the committed document; PADDOCK_OPENAPI_JSON names another one (the
// runner's self-test gives a perturbed copy, which must fail).
var openapiPath = "../../crates/paddock/openapi.json"

func init() {
	if p := os.Getenv("PADDOCK_OPENAPI_JSON"); p != "" {
		openapiPath = p
	}
}

func loadDoc(t *testing.T) map[string]interface{} {
	t.Helper()
	b, err := os.ReadFile(openapiPath)
	if err != nil {
		t.Fatalf("read the OpenAPI document: %v", err)
	}
	var doc map[string]interface{}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse %s: %v", openapiPath, err)
	}
	return doc
}

func obj(v interface{}) map[string]interface{} {
	m, _ := v.(map[string]interface{})
	return m
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func diff(want, got map[string]bool) (missing, extra []string) {
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return
}

// ---- operations ----------------------------------------------------------------------

type recorded struct {
	method, path string
	params       map[string]bool // query keys and (lower-cased) headers of the document's kind
}

// recorder answers every request with a plausible empty answer and records it.
type recorder struct{ reqs []recorded }

const testID = "a b/c?d#e%f"

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	path := req.URL.EscapedPath()
	path = strings.Replace(path, "/v1/sandboxes/a%20b%2Fc%3Fd%23e%25f", "/v1/sandboxes/{id}", 1)
	rec := recorded{method: req.Method, path: path, params: map[string]bool{}}
	for k := range req.URL.Query() {
		rec.params["query "+k] = true
	}
	if req.Header.Get("Last-Event-ID") != "" {
		rec.params["header Last-Event-ID"] = true
	}
	r.reqs = append(r.reqs, rec)
	status, ctype, body := 200, "application/json", "{}"
	switch {
	case req.Method == http.MethodDelete:
		status, body = 204, ""
	case path == "/v1/sandboxes" && req.Method == http.MethodGet:
		body = "[]"
	case path == "/v1/events":
		ctype, body = "text/event-stream", ""
	case path == "/metrics":
		ctype, body = "application/openmetrics-text", ""
	case strings.HasSuffix(path, "/logs"):
		ctype, body = "text/plain", ""
	case req.Method == http.MethodPost && path == "/v1/sandboxes":
		status = 201
	}
	return &http.Response{
		StatusCode: status,
		Header:     http.Header{"Content-Type": {ctype}},
		Body:       io.NopCloser(bytes.NewReader([]byte(body))),
		Request:    req,
	}, nil
}

// calls: every client method that sends a request, with every option set.
func allCalls() map[string]func(context.Context, *Client) error {
	d := 1500 * time.Millisecond
	lc := &SandboxOptions{Lifecycle: "0123456789abcdef"}
	since := uint64(3)
	return map[string]func(context.Context, *Client) error{
		"Create": func(ctx context.Context, c *Client) error {
			_, err := c.Create(ctx, SandboxSpec{ID: testID, Command: "true"})
			return err
		},
		"List": func(ctx context.Context, c *Client) error {
			_, err := c.List(ctx, &ListOptions{Labels: []string{"app=web"}})
			return err
		},
		"Get": func(ctx context.Context, c *Client) error { _, err := c.Get(ctx, testID, lc); return err },
		"Update": func(ctx context.Context, c *Client) error {
			_, err := c.Update(ctx, testID, UpdateRequest{Limits: LimitsUpdate{PidsMax: Ptr(uint64(5))}})
			return err
		},
		"Delete": func(ctx context.Context, c *Client) error { return c.Delete(ctx, testID, lc) },
		"Stop": func(ctx context.Context, c *Client) error {
			_, err := c.Stop(ctx, testID, &StopOptions{Lifecycle: lc.Lifecycle, Timeout: &d})
			return err
		},
		"Kill": func(ctx context.Context, c *Client) error { _, err := c.Kill(ctx, testID, lc); return err },
		"Wait": func(ctx context.Context, c *Client) error {
			_, err := c.Wait(ctx, testID, &WaitOptions{Lifecycle: lc.Lifecycle, Timeout: &d})
			return err
		},
		"Pause":  func(ctx context.Context, c *Client) error { _, err := c.Pause(ctx, testID, lc); return err },
		"Resume": func(ctx context.Context, c *Client) error { _, err := c.Resume(ctx, testID, lc); return err },
		"ExtendDeadline": func(ctx context.Context, c *Client) error {
			_, err := c.ExtendDeadline(ctx, testID, time.Minute)
			return err
		},
		"Stats": func(ctx context.Context, c *Client) error { _, err := c.Stats(ctx, testID, lc); return err },
		"Logs":  func(ctx context.Context, c *Client) error { _, err := c.Logs(ctx, testID, lc); return err },
		"Events": func(ctx context.Context, c *Client) error {
			s, err := c.Events(ctx, &EventsOptions{ID: testID, Since: &since, LastEventID: "2"})
			if err != nil {
				return err
			}
			defer s.Close()
			if _, err := s.Next(); err != io.EOF {
				return fmt.Errorf("Next on an empty stream: %v, want io.EOF", err)
			}
			return nil
		},
		"Node": func(ctx context.Context, c *Client) error { _, err := c.Node(ctx); return err },
		"Drain": func(ctx context.Context, c *Client) error {
			_, err := c.Drain(ctx, &DrainRequest{Stop: true})
			return err
		},
		"Undrain": func(ctx context.Context, c *Client) error {
			_, err := c.Undrain(ctx)
			return err
		},
		"Metrics": func(ctx context.Context, c *Client) error { _, err := c.Metrics(ctx); return err },
		"OpenAPI": func(ctx context.Context, c *Client) error { _, err := c.OpenAPI(ctx); return err },
		"Healthz": func(ctx context.Context, c *Client) error { _, err := c.Healthz(ctx); return err },
		"Readyz":  func(ctx context.Context, c *Client) error { _, err := c.Readyz(ctx); return err },
	}
}

func TestEveryOperationHasAClientMethod(t *testing.T) {
	doc := loadDoc(t)
	// The document's operations and their parameters.
	want := map[string]map[string]bool{}
	for path, item := range obj(doc["paths"]) {
		for method, op := range obj(item) {
			switch method {
			case "get", "post", "put", "patch", "delete", "head", "options", "trace":
			default:
				continue
			}
			params := map[string]bool{}
			ps, _ := obj(op)["parameters"].([]interface{})
			for _, p := range ps {
				pm := obj(p)
				if pm["in"] == "path" {
					continue
				}
				params[fmt.Sprintf("%s %s", pm["in"], pm["name"])] = true
			}
			want[strings.ToUpper(method)+" "+path] = params
		}
	}
	if len(want) == 0 {
		t.Fatal("the document has no operations")
	}

	rec := &recorder{}
	c, err := NewTCP("http://paddock.invalid:1", "0123456789abcdef", WithHTTPClient(&http.Client{Transport: rec}))
	if err != nil {
		t.Fatal(err)
	}
	calls := allCalls()
	// Every exported method taking a context is in calls.
	ctxType := reflect.TypeOf((*context.Context)(nil)).Elem()
	ct := reflect.TypeOf(c)
	for i := 0; i < ct.NumMethod(); i++ {
		m := ct.Method(i)
		if m.Type.NumIn() > 1 && m.Type.In(1) == ctxType {
			if _, ok := calls[m.Name]; !ok {
				t.Errorf("client method %s is not exercised by allCalls (drift_test.go): add it", m.Name)
			}
		}
	}
	got := map[string]map[string]bool{}
	byOp := map[string]string{}
	for name, call := range calls {
		rec.reqs = nil
		if err := call(context.Background(), c); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(rec.reqs) != 1 {
			t.Errorf("%s sent %d requests, want 1", name, len(rec.reqs))
			continue
		}
		r := rec.reqs[0]
		op := r.method + " " + r.path
		got[op] = r.params
		byOp[op] = name
	}
	for op, params := range want {
		gp, ok := got[op]
		if !ok {
			t.Errorf("operation %s (in %s) has no client method", op, openapiPath)
			continue
		}
		if missing, extra := diff(params, gp); len(missing)+len(extra) > 0 {
			t.Errorf("%s (client %s): parameters not sent: %v; sent but not in the document: %v", op, byOp[op], missing, extra)
		}
	}
	for op, name := range byOp {
		if _, ok := want[op]; !ok {
			t.Errorf("client method %s calls %s, which the document does not have", name, op)
		}
	}

	// Each method returns the Go type of its operation's success schema, and sends the Go
	// type of its request body's.
	for op, name := range byOp {
		parts := strings.SplitN(op, " ", 2)
		o := obj(obj(obj(doc["paths"])[parts[1]])[strings.ToLower(parts[0])])
		if o == nil {
			continue
		}
		m, _ := ct.MethodByName(name)
		var got reflect.Type
		if m.Type.NumOut() == 2 {
			got = m.Type.Out(0)
		}
		for code, r := range obj(o["responses"]) {
			if code[0] != '2' {
				continue
			}
			schema := obj(obj(obj(obj(r)["content"])["application/json"])["schema"])
			want := goTypeOf(schema)
			if schema == nil {
				// No JSON answer (204, text, a stream): no decoded type to check.
				continue
			}
			if want == nil {
				t.Errorf("%s %s: no Go type known for the %s answer's schema %v", name, op, code, schema)
			} else if got == nil || (got != want && got != reflect.PtrTo(want)) {
				t.Errorf("%s (%s) returns %v; the %s answer is %v", name, op, got, code, want)
			}
		}
		if rb := obj(obj(obj(o["requestBody"])["content"])["application/json"]); rb != nil {
			schema := obj(rb["schema"])
			if alts, ok := schema["oneOf"].([]interface{}); ok { // null or a body
				for _, a := range alts {
					if _, isRef := obj(a)["$ref"]; isRef {
						schema = obj(a)
					}
				}
			}
			want := goTypeOf(schema)
			found := false
			for i := 2; i < m.Type.NumIn(); i++ {
				in := m.Type.In(i)
				if want != nil && (in == want || in == reflect.PtrTo(want) || (want == reflect.TypeOf(CreateRequest{}) && in == reflect.TypeOf(SandboxSpec{}))) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s (%s) takes no %v, its request body", name, op, want)
			}
		}
	}
}

// goTypeOf is the Go type of a schema: a referenced component's, or an array of one, or
// json.RawMessage for a free-form object.
func goTypeOf(schema map[string]interface{}) reflect.Type {
	if ref, ok := schema["$ref"].(string); ok {
		return goTypes[strings.TrimPrefix(ref, "#/components/schemas/")]
	}
	if schema["type"] == "array" {
		if el := goTypeOf(obj(schema["items"])); el != nil {
			return reflect.SliceOf(el)
		}
	}
	if schema["type"] == "object" && schema["properties"] == nil {
		return reflect.TypeOf(json.RawMessage{})
	}
	return nil
}

// ---- schemas -------------------------------------------------------------------------

// goTypes maps the document's schema objects with properties to the Go types that carry
// them: a components/schemas name, or a JSON pointer (from the document's root) for an
// inline object.
var goTypes = map[string]reflect.Type{
	"CreateRequest":   reflect.TypeOf(CreateRequest{}),
	"DrainFailure":    reflect.TypeOf(DrainFailure{}),
	"DrainReport":     reflect.TypeOf(DrainReport{}),
	"DrainRequest":    reflect.TypeOf(DrainRequest{}),
	"ErrorBody":       reflect.TypeOf(ErrorBody{}),
	"Event":           reflect.TypeOf(Event{}),
	"EventStreamItem": reflect.TypeOf(EventStreamItem{}),
	"EventsGone":      reflect.TypeOf(EventsGone{}),
	"FilesystemSpec":  reflect.TypeOf(FilesystemSpec{}),
	"IdMapSpec":       reflect.TypeOf(IdMapSpec{}),
	"IoDeviceLimit":   reflect.TypeOf(IoDeviceLimit{}),
	"JailSpec":        reflect.TypeOf(JailSpec{}),
	"JailStatus":      reflect.TypeOf(JailStatus{}),
	"KilledProcess":   reflect.TypeOf(KilledProcess{}),
	"Lagged":          reflect.TypeOf(Lagged{}),
	"LandlockSpec":    reflect.TypeOf(LandlockSpec{}),
	"Limits":          reflect.TypeOf(Limits{}),
	"LimitsUpdate":    reflect.TypeOf(LimitsUpdate{}),
	"MainExit":        reflect.TypeOf(MainExit{}),
	"MountSpec":       reflect.TypeOf(MountSpec{}),
	"NamedRlimit":     reflect.TypeOf(NamedRlimit{}),
	"NetStatus":       reflect.TypeOf(NetStatus{}),
	"Network":         reflect.TypeOf(Network{}),
	"NodeCgroup":      reflect.TypeOf(NodeCgroup{}),
	"NodeInfo":        reflect.TypeOf(NodeInfo{}),
	"NodeMemory":      reflect.TypeOf(NodeMemory{}),
	"NodeResources":   reflect.TypeOf(NodeResources{}),
	"PendingRestart":  reflect.TypeOf(PendingRestart{}),
	"PrivilegesSpec":  reflect.TypeOf(PrivilegesSpec{}),
	"PsiLine":         reflect.TypeOf(PsiLine{}),
	"PsiStats":        reflect.TypeOf(PsiStats{}),
	"PublishSpec":     reflect.TypeOf(PublishSpec{}),
	"RestartPolicy":   reflect.TypeOf(RestartPolicy{}),
	"RlimitRange":     reflect.TypeOf(RlimitRange{}),
	"SandboxCounts":   reflect.TypeOf(SandboxCounts{}),
	"SandboxInfo":     reflect.TypeOf(SandboxInfo{}),
	"SandboxPressure": reflect.TypeOf(SandboxPressure{}),
	"SandboxSpec":     reflect.TypeOf(SandboxSpec{}),
	"SandboxStats":    reflect.TypeOf(SandboxStats{}),
	"SeccompSpec":     reflect.TypeOf(SeccompProfile{}), // its object form; the string form is SeccompBuiltin
	"SequencedEvent":  reflect.TypeOf(SequencedEvent{}),
	"StatusBody":      reflect.TypeOf(StatusBody{}),
	"StdioSpec":       reflect.TypeOf(StdioSpec{}),
	"StopPolicy":      reflect.TypeOf(StopPolicy{}),
	"StopReport":      reflect.TypeOf(StopReport{}),
	"StuckProcess":    reflect.TypeOf(StuckProcess{}),
	"TapSpec":         reflect.TypeOf(TapSpec{}),
	"UndrainReport":   reflect.TypeOf(UndrainReport{}),
	"UpdateRequest":   reflect.TypeOf(UpdateRequest{}),
	"UserNsSpec":      reflect.TypeOf(UserNsSpec{}),
	"UserSpec":        reflect.TypeOf(UserSpec{}),

	"/components/schemas/Network/oneOf/2/properties/veth":               reflect.TypeOf(VethSpec{}),
	"/components/schemas/SeccompSpec/oneOf/1/properties/syscalls/items": reflect.TypeOf(SeccompRule{}),
	"/components/schemas/StdioSpec/properties/stdin/oneOf/1":            reflect.TypeOf(StdioTarget{}),
	"/components/schemas/StdioSpec/properties/stdout/oneOf/1":           reflect.TypeOf(StdioTarget{}),
	"/components/schemas/StdioSpec/properties/stderr/oneOf/1":           reflect.TypeOf(StdioTarget{}),
}

// coveredBy: schemas whose properties a Go type of another schema carries.
var coveredBy = map[string]string{
	"EventKind": "Event (the flattened kinds, with id, lifecycle and at_ms)",
}

func resolve(doc map[string]interface{}, ptr string) interface{} {
	var cur interface{} = doc
	for _, part := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]interface{}:
			cur = c[part]
		case []interface{}:
			var i int
			if _, err := fmt.Sscan(part, &i); err != nil || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

// props collects the property names of the schema at ptr: its own, those of its allOf
// members (references followed) and of its inline oneOf/anyOf members (the variants of a
// union the Go type flattens). Each object visited is marked in seen. union says whether
// a oneOf/anyOf contributed (then requiredness is per variant and not checked).
func props(doc map[string]interface{}, ptr string, out, required map[string]bool, seen map[string]bool) (union bool) {
	s := obj(resolve(doc, ptr))
	if s == nil {
		return false
	}
	if ref, ok := s["$ref"].(string); ok {
		return props(doc, strings.TrimPrefix(ref, "#"), out, required, seen)
	}
	if p := obj(s["properties"]); p != nil {
		seen[ptr] = true
		for k := range p {
			out[k] = true
		}
		if req, ok := s["required"].([]interface{}); ok {
			for _, r := range req {
				required[r.(string)] = true
			}
		}
	}
	if all, ok := s["allOf"].([]interface{}); ok {
		for i := range all {
			if props(doc, fmt.Sprintf("%s/allOf/%d", ptr, i), out, required, seen) {
				union = true
			}
		}
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		alts, _ := s[k].([]interface{})
		for i, a := range alts {
			if _, isRef := obj(a)["$ref"]; isRef {
				continue
			}
			if obj(obj(a)["properties"]) != nil || obj(a)["allOf"] != nil {
				union = true
				props(doc, fmt.Sprintf("%s/%s/%d", ptr, k, i), out, map[string]bool{}, seen)
			}
		}
	}
	return union
}

// goJSON is a struct type's JSON member names and which of them are omitempty.
func goJSON(t reflect.Type, names, omit map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		parts := strings.Split(tag, ",")
		if f.Anonymous && tag == "" {
			goJSON(f.Type, names, omit)
			continue
		}
		if !f.IsExported() || parts[0] == "-" {
			continue
		}
		name := parts[0]
		if name == "" {
			name = f.Name
		}
		names[name] = true
		for _, o := range parts[1:] {
			if o == "omitempty" {
				omit[name] = true
			}
		}
	}
}

func TestSchemaFieldsMatch(t *testing.T) {
	doc := loadDoc(t)
	schemas := obj(obj(doc["components"])["schemas"])
	seen := map[string]bool{}
	for key, typ := range goTypes {
		ptr := key
		if !strings.HasPrefix(key, "/") {
			ptr = "/components/schemas/" + key
		}
		if resolve(doc, ptr) == nil {
			t.Errorf("%s: no such schema in the document (remove its Go type %s, or rename it)", key, typ)
			continue
		}
		want, required := map[string]bool{}, map[string]bool{}
		union := props(doc, ptr, want, required, seen)
		got, omit := map[string]bool{}, map[string]bool{}
		goJSON(typ, got, omit)
		if missing, extra := diff(want, got); len(missing)+len(extra) > 0 {
			t.Errorf("%s (Go %s): properties without a Go field: %v; Go fields not in the schema: %v", key, typ, missing, extra)
		}
		if !union {
			for name := range required {
				if omit[name] {
					t.Errorf("%s (Go %s): %q is required but omitempty in Go", key, typ, name)
				}
			}
		}
	}
	// Every schema object with properties, anywhere in the document, has a Go type.
	var walk func(ptr string, v interface{})
	walk = func(ptr string, v interface{}) {
		switch x := v.(type) {
		case map[string]interface{}:
			if p := obj(x["properties"]); p != nil && !seen[ptr] {
				covered := false
				for name := range coveredBy {
					if strings.HasPrefix(ptr, "/components/schemas/"+name+"/") || ptr == "/components/schemas/"+name {
						covered = true
					}
				}
				if !covered {
					names := map[string]bool{}
					for k := range p {
						names[k] = true
					}
					t.Errorf("the schema object at %s (properties %v) has no Go type: add one to goTypes (drift_test.go)", ptr, sortedKeys(names))
				}
			}
			for k, c := range x {
				if k == "properties" {
					for pk, pv := range obj(c) {
						walk(ptr+"/properties/"+strings.ReplaceAll(pk, "/", "~1"), pv)
					}
					continue
				}
				walk(ptr+"/"+strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1"), c)
			}
		case []interface{}:
			for i, c := range x {
				walk(fmt.Sprintf("%s/%d", ptr, i), c)
			}
		}
	}
	walk("", doc)
	for name := range coveredBy {
		if schemas[name] == nil {
			t.Errorf("coveredBy names %s, which the document does not have", name)
		}
	}
}

// TestAllOfMembersDisjoint: the members of an all-of composition (Event: its kind and
// its id, lifecycle and at_ms; SequencedEvent: the event and its seq) are one JSON
// object, so no property may come from two of them (a variant of a member's union
// counts as that member's): else the object carries the key twice, and JSON readers
// disagree on which value wins.
func TestAllOfMembersDisjoint(t *testing.T) {
	doc := loadDoc(t)
	checked := 0
	var walk func(ptr string, v interface{})
	walk = func(ptr string, v interface{}) {
		switch x := v.(type) {
		case map[string]interface{}:
			if all, ok := x["allOf"].([]interface{}); ok && len(all) > 1 {
				checked++
				from := map[string]int{}
				for i := range all {
					names := map[string]bool{}
					props(doc, fmt.Sprintf("%s/allOf/%d", ptr, i), names, map[string]bool{}, map[string]bool{})
					for _, k := range sortedKeys(names) {
						if j, dup := from[k]; dup {
							t.Errorf("%s: property %q is in allOf members %d and %d: the object would carry it twice", ptr, k, j, i)
						} else {
							from[k] = i
						}
					}
				}
			}
			for k, c := range x {
				walk(ptr+"/"+strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1"), c)
			}
		case []interface{}:
			for i, c := range x {
				walk(fmt.Sprintf("%s/%d", ptr, i), c)
			}
		}
	}
	walk("", doc)
	if checked == 0 {
		t.Fatal("the document has no all-of compositions (Event, SequencedEvent)")
	}
}

// enums maps each enum of the document to the Go constants of its type.
func enums() map[string][]string {
	strs := func(vs ...interface{}) []string {
		out := []string{}
		for _, v := range vs {
			out = append(out, reflect.ValueOf(v).String())
		}
		return out
	}
	eventTypes := strs(EventStarted, EventAdopted, EventStartFailed, EventMainExited, EventStopping,
		EventLeakedProcessesKilled, EventStopped, EventQuarantined, EventFailed, EventOOM,
		EventLimitsUpdated, EventPaused, EventResumed, EventDeadlineSet, EventRestarting,
		EventRestartCancelled, EventDeadline)
	return map[string][]string{
		"/components/schemas/State":            strs(StateCreating, StateRunning, StateStopping, StateStopped, StateFailed, StateQuarantined),
		"/components/schemas/StopReason":       strs(StopRequested, StopKilled, StopMainExited, StopShutdown, StopRecovered, StopDeadline, StopOOM, StopDrain),
		"/components/schemas/OnMainExit":       strs(OnMainExitStop, OnMainExitKeepRunning),
		"/components/schemas/RestartMode":      strs(RestartNever, RestartOnFailure, RestartAlways),
		"/components/schemas/CgroupFsSpec":     strs(CgroupFsUnchanged, CgroupFsReadonly, CgroupFsHidden),
		"/components/schemas/LandlockModeSpec": strs(LandlockAuto, LandlockOff, LandlockRequired),
		"/components/schemas/Protocol":         strs(ProtocolTCP, ProtocolUDP),
		"/components/schemas/SeccompBuiltin":   strs(SeccompDefault, SeccompUnconfined),
		"/components/schemas/UnlimitedWord":    {"unlimited", "infinity"}, // LimitValue.UnmarshalJSON
		"/components/schemas/JailSpec/properties/namespaces/items": strs(NamespacePID, NamespaceMount,
			NamespaceIPC, NamespaceUTS, NamespaceCgroup, NamespaceUser),
		"/components/schemas/EventStreamItem/properties/event":    append(eventTypes, string(EventLagged)),
		"/components/schemas/EventKind#type":                      eventTypes, // the variants' `type`
		"/components/schemas/MountSpec#type":                      strs(MountBind, MountTmpfs, MountProc, MountSysfs, MountMqueue),
		"/components/schemas/Network/oneOf/0":                     {"host", "isolated"},
		"/components/schemas/StdioSpec/properties/stdin/oneOf/0":  {"null"},
		"/components/schemas/StdioSpec/properties/stdout/oneOf/0": {"null", "log"},
		"/components/schemas/StdioSpec/properties/stderr/oneOf/0": {"null", "log"},
	}
}

var discriminator = regexp.MustCompile(`^(.*)/oneOf/[0-9]+/properties/type$`)

func TestEnumsMatch(t *testing.T) {
	doc := loadDoc(t)
	want := enums()
	found := map[string]map[string]bool{}
	var walk func(ptr string, v interface{})
	walk = func(ptr string, v interface{}) {
		switch x := v.(type) {
		case map[string]interface{}:
			if e, ok := x["enum"].([]interface{}); ok && !strings.HasSuffix(ptr, "/CreateRequest/properties/start") {
				key := ptr
				// The `type` of a tagged union's variants: one enum over the variants.
				if m := discriminator.FindStringSubmatch(ptr); m != nil {
					key = m[1] + "#type"
				}
				if found[key] == nil {
					found[key] = map[string]bool{}
				}
				for _, s := range e {
					found[key][fmt.Sprint(s)] = true
				}
			}
			for k, c := range x {
				walk(ptr+"/"+k, c)
			}
		case []interface{}:
			for i, c := range x {
				walk(fmt.Sprintf("%s/%d", ptr, i), c)
			}
		}
	}
	walk("", doc)
	if len(found) == 0 {
		t.Fatal("the document has no enums")
	}
	for key, vals := range found {
		g, ok := want[key]
		if !ok {
			t.Errorf("the enum at %s %v has no Go constants: add them to enums() (drift_test.go)", key, sortedKeys(vals))
			continue
		}
		gs := map[string]bool{}
		for _, s := range g {
			gs[s] = true
		}
		if missing, extra := diff(vals, gs); len(missing)+len(extra) > 0 {
			t.Errorf("enum %s: values without a Go constant: %v; Go constants not in the document: %v", key, missing, extra)
		}
	}
	for key := range want {
		if found[key] == nil {
			t.Errorf("enums() names %s, which is not an enum of the document", key)
		}
	}
}
