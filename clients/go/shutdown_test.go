package paddock

// What a client sees when the daemon shuts down (SIGTERM): an open event stream ends
// with io.EOF, a wait in progress is a 503. It ends the daemon, so it runs only when
// PADDOCK_TEST_SHUTDOWN_PID names the daemon's pid: clients/go/run-tests runs it alone,
// after the other tests.

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDaemonShutdown(t *testing.T) {
	pidStr := os.Getenv("PADDOCK_TEST_SHUTDOWN_PID")
	if pidStr == "" {
		t.Skip("ends the daemon: only with PADDOCK_TEST_SHUTDOWN_PID (clients/go/run-tests sets it)")
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil {
		t.Fatalf("PADDOCK_TEST_SHUTDOWN_PID: %v", err)
	}
	trs := transports(t)
	c := trs[0].c
	if trs[0].name != "unix" {
		t.Fatal("needs PADDOCK_SOCKET")
	}
	ctx := ctxFor(t, 60*time.Second)
	id := "goclient-shutdown-" + pidStr
	info, err := c.Create(ctx, SandboxSpec{ID: id, Command: "sleep", Args: []string{"300"}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	// The daemon leaves its sandboxes running when it stops: this one is killed through
	// its cgroup (as root) and its cgroup removed, whatever happens.
	t.Cleanup(func() {
		dir := info.CgroupPath
		if !filepath.IsAbs(dir) {
			t.Errorf("cgroup path %q is not absolute", dir)
			return
		}
		_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond) // polling the kill's end, with a deadline
		}
	})

	// Every transport's stream, and a wait over the first.
	var streams []*EventStream
	for _, tr := range trs {
		// Of no sandbox: nothing is sent, the stream only ends.
		s, err := tr.c.Events(ctx, &EventsOptions{ID: "goclient-shutdown-no-such-sandbox"})
		if err != nil {
			t.Fatalf("%s: events: %v", tr.name, err)
		}
		defer s.Close()
		streams = append(streams, s)
	}
	// The wait, on a connection of its own; before the SIGTERM its request is written and
	// the daemon counts one more open unix connection (its request is then, almost
	// always, being served: a request the daemon has not read yet is closed unanswered).
	before := unixConnections(t, c)
	wrote := make(chan struct{})
	waited := make(chan error, 1)
	wc := NewUnix(os.Getenv("PADDOCK_SOCKET"))
	defer wc.Close()
	go func() {
		tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { close(wrote) }})
		_, err := wc.Wait(tctx, id, nil)
		waited <- err
	}()
	select {
	case <-wrote:
	case err := <-waited:
		t.Fatalf("the wait ended before the shutdown: %v", err)
	case <-ctx.Done():
		t.Fatal("the wait's request was not written")
	}
	deadline := time.Now().Add(10 * time.Second)
	for unixConnections(t, c) < before+1 {
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not count the wait's connection within 10 s")
		}
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM the daemon (%d): %v", pid, err)
	}
	for i, s := range streams {
		it, err := s.Next()
		if err != io.EOF {
			t.Fatalf("%s: the stream after the daemon's SIGTERM: %+v, %v; want io.EOF", trs[i].name, it, err)
		}
	}
	select {
	case err = <-waited:
	case <-time.After(30 * time.Second):
		t.Fatal("the wait did not end within 30 s of the daemon's SIGTERM")
	}
	var e *APIError
	switch {
	case errors.As(err, &e):
		if e.StatusCode != http.StatusServiceUnavailable || !strings.Contains(e.Message, "shutting down") {
			t.Fatalf("the wait across the daemon's shutdown: %v; want a 503", err)
		}
	case err == nil:
		t.Fatal("the wait across the daemon's shutdown answered 200")
	default:
		t.Logf("the wait's request was not read before the shutdown (connection closed): %v", err)
	}
}

// unixConnections is the daemon's paddock_connections{listener="unix"}.
func unixConnections(t *testing.T, c *Client) int {
	t.Helper()
	m, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, line := range strings.Split(m, "\n") {
		if strings.HasPrefix(line, `paddock_connections{listener="unix"} `) {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, `paddock_connections{listener="unix"} `)))
			if err != nil {
				t.Fatalf("metrics: %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("metrics: no paddock_connections{listener=\"unix\"}")
	return 0
}
