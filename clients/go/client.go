// Package paddock is a client of the paddock daemon's HTTP API (`paddock serve`), over
// its unix socket or over TCP with a bearer token. It uses the standard library only.
//
// Every call takes a context.Context: cancelling it ends the call, including a wait or an
// event stream. The Client sets no timeout of its own (a wait or a stream may rightly
// take hours); give each call a context with the deadline it needs.
//
// An answer other than 2xx is returned as a *APIError with the status and the daemon's
// message.
package paddock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultSocket is the daemon's default unix socket.
const DefaultSocket = "/run/paddock/paddock.sock"

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 1 << 20

// Client talks to one paddock daemon. It is safe for concurrent use.
type Client struct {
	base   string // scheme://host, no trailing slash
	token  string
	http   *http.Client
	target string // what to name in errors: the socket or the URL
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient uses hc (its Transport, e.g. for TLS settings). For a unix socket
// client, hc's Transport is replaced by one that dials the socket.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.http = hc }
}

// NewUnix is a client of the daemon listening on the unix socket at path
// (DefaultSocket if empty). No token is sent: the socket's mode is the access control.
func NewUnix(path string, opts ...Option) *Client {
	if path == "" {
		path = DefaultSocket
	}
	c := &Client{base: "http://paddock", target: path}
	for _, o := range opts {
		o(c)
	}
	dialer := &net.Dialer{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second, // below the daemon's --idle-timeout (60s)
	}
	if c.http == nil {
		c.http = &http.Client{Transport: tr}
	} else {
		hc := *c.http
		hc.Transport = tr
		c.http = &hc
	}
	return c
}

// NewTCP is a client of the daemon's TCP listener at baseURL (`http://127.0.0.1:7070`),
// sending token as `Authorization: Bearer <token>` on every request.
func NewTCP(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("paddock: base URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("paddock: base URL %q: want http(s)://HOST:PORT", baseURL)
	}
	if token == "" {
		return nil, errors.New("paddock: a TCP client needs the daemon's token")
	}
	c := &Client{base: u.Scheme + "://" + u.Host, token: token, target: u.Scheme + "://" + u.Host}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = &http.Client{Transport: &http.Transport{
			Proxy:               nil, // the daemon is on the node or its network: no proxy
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		}}
	}
	return c, nil
}

// NewFromEnv is NewTCP(PADDOCK_URL, PADDOCK_TOKEN) when PADDOCK_URL is set (the token
// may instead be read from the file PADDOCK_TOKEN_FILE), else NewUnix(PADDOCK_SOCKET).
func NewFromEnv(opts ...Option) (*Client, error) {
	if u := os.Getenv("PADDOCK_URL"); u != "" {
		tok := os.Getenv("PADDOCK_TOKEN")
		if tok == "" {
			if f := os.Getenv("PADDOCK_TOKEN_FILE"); f != "" {
				b, err := os.ReadFile(f)
				if err != nil {
					return nil, fmt.Errorf("paddock: PADDOCK_TOKEN_FILE: %w", err)
				}
				tok = strings.TrimSpace(string(b))
			}
		}
		return NewTCP(u, tok, opts...)
	}
	return NewUnix(os.Getenv("PADDOCK_SOCKET"), opts...), nil
}

// Close closes idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// ---- requests ------------------------------------------------------------------------

func sandboxPath(id string, suffix string) string {
	return "/v1/sandboxes/" + url.PathEscape(id) + suffix
}

// do sends one request and returns the answer if its status is 2xx, else a *APIError
// (the body closed). body is JSON-encoded unless nil.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, hdr http.Header, body interface{}) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("paddock: %s %s: encode the body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("paddock: %s %s: %w", method, path, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("paddock: %s %s: %w", method, path, ctxErr)
		}
		return nil, fmt.Errorf("paddock: %s %s at %s: %w", method, path, c.target, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, newAPIError(method, path, resp)
}

// call sends a request and decodes a JSON answer into out (unless nil).
func (c *Client) call(ctx context.Context, method, path string, q url.Values, body, out interface{}) error {
	resp, err := c.do(ctx, method, path, q, nil, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("paddock: %s %s: %w", method, path, ctxErr)
		}
		return fmt.Errorf("paddock: %s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// text sends a GET and returns the body.
func (c *Client) text(ctx context.Context, path string, q url.Values) (string, error) {
	resp, err := c.do(ctx, http.MethodGet, path, q, nil, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return "", fmt.Errorf("paddock: GET %s: %w", path, ctxErr)
		}
		return "", fmt.Errorf("paddock: GET %s: read the answer: %w", path, err)
	}
	return string(b), nil
}

// ---- options -------------------------------------------------------------------------

// SandboxOptions picks a lifecycle of the ID; empty: the current one.
type SandboxOptions struct {
	Lifecycle string
}

func (o *SandboxOptions) query() url.Values {
	q := url.Values{}
	if o != nil && o.Lifecycle != "" {
		q.Set("lifecycle", o.Lifecycle)
	}
	return q
}

// StopOptions are a stop's lifecycle and grace period.
type StopOptions struct {
	Lifecycle string
	// Timeout replaces the spec's grace period when set (0: no grace).
	Timeout *time.Duration
}

// WaitOptions are a wait's lifecycle and timeout.
type WaitOptions struct {
	Lifecycle string
	// Timeout: the daemon answers after this long at the latest, with the lifecycle as it
	// is then (check State.Ended). Unset: when the lifecycle ends.
	Timeout *time.Duration
}

// ListOptions select sandboxes by label: `key=value` or `key`; every one must match.
type ListOptions struct {
	Labels []string
}

// ---- sandboxes -----------------------------------------------------------------------

// Create creates and starts a sandbox (POST /v1/sandboxes) → 201.
func (c *Client) Create(ctx context.Context, spec SandboxSpec) (*SandboxInfo, error) {
	var out SandboxInfo
	if err := c.call(ctx, http.MethodPost, "/v1/sandboxes", nil, CreateRequest{SandboxSpec: spec}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// List lists every known lifecycle, or those whose labels match (GET /v1/sandboxes).
func (c *Client) List(ctx context.Context, opts *ListOptions) ([]SandboxInfo, error) {
	q := url.Values{}
	if opts != nil {
		for _, l := range opts.Labels {
			q.Add("label", l)
		}
	}
	var out []SandboxInfo
	if err := c.call(ctx, http.MethodGet, "/v1/sandboxes", q, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Get returns one sandbox (GET /v1/sandboxes/{id}).
func (c *Client) Get(ctx context.Context, id string, opts *SandboxOptions) (*SandboxInfo, error) {
	var out SandboxInfo
	if err := c.call(ctx, http.MethodGet, sandboxPath(id, ""), opts.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Update changes a running sandbox's limits (PATCH /v1/sandboxes/{id}).
func (c *Client) Update(ctx context.Context, id string, req UpdateRequest) (*SandboxInfo, error) {
	var out SandboxInfo
	if err := c.call(ctx, http.MethodPatch, sandboxPath(id, ""), nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Delete forgets a stopped or failed sandbox and its log (DELETE /v1/sandboxes/{id}) → 204.
func (c *Client) Delete(ctx context.Context, id string, opts *SandboxOptions) error {
	return c.call(ctx, http.MethodDelete, sandboxPath(id, ""), opts.query(), nil, nil)
}

// Stop stops a sandbox gracefully and waits for the stop (POST .../stop).
func (c *Client) Stop(ctx context.Context, id string, opts *StopOptions) (*StopReport, error) {
	q := url.Values{}
	if opts != nil {
		if opts.Lifecycle != "" {
			q.Set("lifecycle", opts.Lifecycle)
		}
		if opts.Timeout != nil {
			q.Set("timeout", Duration(*opts.Timeout).String())
		}
	}
	var out StopReport
	if err := c.call(ctx, http.MethodPost, sandboxPath(id, "/stop"), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Kill stops a sandbox without grace and waits for the stop (POST .../kill).
func (c *Client) Kill(ctx context.Context, id string, opts *SandboxOptions) (*StopReport, error) {
	var out StopReport
	if err := c.call(ctx, http.MethodPost, sandboxPath(id, "/kill"), opts.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Wait waits until the lifecycle (pinned at the request) has ended, or the timeout has
// passed (GET .../wait). Check the answer's State.Ended(): after a timeout it is live.
func (c *Client) Wait(ctx context.Context, id string, opts *WaitOptions) (*SandboxInfo, error) {
	q := url.Values{}
	if opts != nil {
		if opts.Lifecycle != "" {
			q.Set("lifecycle", opts.Lifecycle)
		}
		if opts.Timeout != nil {
			q.Set("timeout", Duration(*opts.Timeout).String())
		}
	}
	var out SandboxInfo
	if err := c.call(ctx, http.MethodGet, sandboxPath(id, "/wait"), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Pause freezes a sandbox (POST .../pause).
func (c *Client) Pause(ctx context.Context, id string, opts *SandboxOptions) (*SandboxInfo, error) {
	var out SandboxInfo
	if err := c.call(ctx, http.MethodPost, sandboxPath(id, "/pause"), opts.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Resume thaws a sandbox (POST .../resume).
func (c *Client) Resume(ctx context.Context, id string, opts *SandboxOptions) (*SandboxInfo, error) {
	var out SandboxInfo
	if err := c.call(ctx, http.MethodPost, sandboxPath(id, "/resume"), opts.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ExtendDeadline moves a running sandbox's deadline later by extend (POST .../deadline).
func (c *Client) ExtendDeadline(ctx context.Context, id string, extend time.Duration) (*SandboxInfo, error) {
	q := url.Values{"extend": {Duration(extend).String()}}
	var out SandboxInfo
	if err := c.call(ctx, http.MethodPost, sandboxPath(id, "/deadline"), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Stats returns a sandbox's usage (GET .../stats).
func (c *Client) Stats(ctx context.Context, id string, opts *SandboxOptions) (*SandboxStats, error) {
	var out SandboxStats
	if err := c.call(ctx, http.MethodGet, sandboxPath(id, "/stats"), opts.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Logs returns a sandbox's stdout and stderr, the last 4 MiB (GET .../logs).
func (c *Client) Logs(ctx context.Context, id string, opts *SandboxOptions) (string, error) {
	return c.text(ctx, sandboxPath(id, "/logs"), opts.query())
}

// ---- node ----------------------------------------------------------------------------

// Node returns what the node is and holds (GET /v1/node).
func (c *Client) Node(ctx context.Context) (*NodeInfo, error) {
	var out NodeInfo
	if err := c.call(ctx, http.MethodGet, "/v1/node", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Drain refuses every create from now on (POST /v1/node/drain); req nil or
// {Stop: true, Grace: …}.
func (c *Client) Drain(ctx context.Context, req *DrainRequest) (*DrainReport, error) {
	var body interface{}
	if req != nil {
		body = req
	}
	var out DrainReport
	if err := c.call(ctx, http.MethodPost, "/v1/node/drain", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Undrain admits creates again (POST /v1/node/undrain).
func (c *Client) Undrain(ctx context.Context) (*UndrainReport, error) {
	var out UndrainReport
	if err := c.call(ctx, http.MethodPost, "/v1/node/undrain", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Metrics returns the Prometheus / OpenMetrics text (GET /metrics).
func (c *Client) Metrics(ctx context.Context) (string, error) {
	return c.text(ctx, "/metrics", nil)
}

// OpenAPI returns the daemon's OpenAPI document (GET /v1/openapi.json).
func (c *Client) OpenAPI(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.call(ctx, http.MethodGet, "/v1/openapi.json", nil, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Healthz says whether the daemon is alive (GET /healthz).
func (c *Client) Healthz(ctx context.Context) (*StatusBody, error) {
	var out StatusBody
	if err := c.call(ctx, http.MethodGet, "/healthz", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Readyz says whether the daemon is ready: a *APIError with status 503 and the reason
// while it is not (GET /readyz).
func (c *Client) Readyz(ctx context.Context) (*StatusBody, error) {
	var out StatusBody
	if err := c.call(ctx, http.MethodGet, "/readyz", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
