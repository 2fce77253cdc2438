package paddock

// Integration tests against a real daemon, over each transport the environment gives:
// PADDOCK_SOCKET (unix socket) and PADDOCK_URL with PADDOCK_TOKEN or PADDOCK_TOKEN_FILE
// (TCP). Without either they are skipped, unless PADDOCK_TEST_REQUIRE=1 (then both are
// required). clients/go/run-tests starts a contained daemon and sets them. The tests run
// one at a time (one of them drains the node); each deletes what it created, also when
// it fails.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func require() bool { return os.Getenv("PADDOCK_TEST_REQUIRE") == "1" }

type transport struct {
	name string
	c    *Client
}

// transports is each client the environment configures.
func transports(t *testing.T) []transport {
	t.Helper()
	var out []transport
	if s := os.Getenv("PADDOCK_SOCKET"); s != "" {
		out = append(out, transport{"unix", NewUnix(s)})
	} else if require() {
		t.Fatal("PADDOCK_TEST_REQUIRE=1 but PADDOCK_SOCKET is not set")
	}
	if os.Getenv("PADDOCK_URL") != "" {
		c, err := NewFromEnv()
		if err != nil {
			t.Fatalf("the TCP client: %v", err)
		}
		out = append(out, transport{"tcp", c})
	} else if require() {
		t.Fatal("PADDOCK_TEST_REQUIRE=1 but PADDOCK_URL is not set")
	}
	if len(out) == 0 {
		t.Skip("no daemon: set PADDOCK_SOCKET and/or PADDOCK_URL + PADDOCK_TOKEN (clients/go/run-tests does)")
	}
	return out
}

// eachTransport runs f as a subtest per transport.
func eachTransport(t *testing.T, f func(t *testing.T, c *Client)) {
	for _, tr := range transports(t) {
		tr := tr
		t.Run(tr.name, func(t *testing.T) {
			defer tr.c.Close()
			f(t, tr.c)
		})
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newID is a sandbox ID unique to this test run, forgotten (killed and deleted) when the
// test ends.
func newID(t *testing.T, c *Client, what string) string {
	id := fmt.Sprintf("goclient-%d-%s-%d", os.Getpid(), what, time.Now().UnixNano()%1e9)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := c.Kill(ctx, id, nil); err != nil && !IsNotFound(err) && !IsConflict(err) {
			t.Errorf("cleanup: kill %s: %v", id, err)
		}
		if err := c.Delete(ctx, id, nil); err != nil && !IsNotFound(err) {
			t.Errorf("cleanup: delete %s: %v", id, err)
		}
	})
	return id
}

func apiErr(t *testing.T, err error, status int, msgPart string) *APIError {
	t.Helper()
	var e *APIError
	if !errors.As(err, &e) {
		t.Fatalf("want a *APIError %d, got %T %v", status, err, err)
	}
	if e.StatusCode != status {
		t.Fatalf("want status %d, got %d: %v", status, e.StatusCode, e)
	}
	if !strings.Contains(e.Message, msgPart) {
		t.Fatalf("want a message containing %q, got %q", msgPart, e.Message)
	}
	if !strings.Contains(e.Error(), e.Message) || !strings.Contains(e.Error(), fmt.Sprint(status)) {
		t.Fatalf("Error() %q lacks the status or the message", e.Error())
	}
	return e
}

func TestSandboxLifecycle(t *testing.T) {
	eachTransport(t, func(t *testing.T, c *Client) {
		ctx := ctxFor(t, 60*time.Second)
		id := newID(t, c, "life")
		label := fmt.Sprintf("run-%d", time.Now().UnixNano())
		info, err := c.Create(ctx, SandboxSpec{
			ID: id, Command: "sleep", Args: []string{"300"},
			Labels: map[string]string{"goclient": label},
			Stop:   &StopPolicy{GracePeriodMs: Ptr(uint64(5000))},
		})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if info.ID != id || info.State != StateRunning || info.Pid == nil || len(info.Lifecycle) != 16 || !info.Current {
			t.Fatalf("create answered %+v", info)
		}
		if info.Spec.Command != "sleep" || len(info.Spec.Args) != 1 || info.Spec.Args[0] != "300" {
			t.Fatalf("the spec came back as %+v", info.Spec)
		}

		got, err := c.Get(ctx, id, &SandboxOptions{Lifecycle: info.Lifecycle})
		if err != nil || got.Lifecycle != info.Lifecycle || got.State != StateRunning || *got.Pid != *info.Pid {
			t.Fatalf("get: %+v, %v", got, err)
		}

		list, err := c.List(ctx, &ListOptions{Labels: []string{"goclient=" + label}})
		if err != nil || len(list) != 1 || list[0].ID != id {
			t.Fatalf("list by label: %d sandboxes (%v), want just %s", len(list), err, id)
		}
		none, err := c.List(ctx, &ListOptions{Labels: []string{"goclient=" + label + "-other"}})
		if err != nil || len(none) != 0 {
			t.Fatalf("list by another label: %d sandboxes (%v), want 0", len(none), err)
		}
		all, err := c.List(ctx, nil)
		found := false
		for _, s := range all {
			found = found || s.ID == id
		}
		if err != nil || !found {
			t.Fatalf("list: %s not among %d sandboxes (%v)", id, len(all), err)
		}

		st, err := c.Stats(ctx, id, nil)
		if err != nil || st.Processes != 1 {
			t.Fatalf("stats: %+v, %v (want 1 process)", st, err)
		}

		p, err := c.Pause(ctx, id, nil)
		if err != nil || !p.Paused {
			t.Fatalf("pause: %+v, %v", p, err)
		}
		r, err := c.Resume(ctx, id, nil)
		if err != nil || r.Paused {
			t.Fatalf("resume: %+v, %v", r, err)
		}

		before := time.Now()
		d, err := c.ExtendDeadline(ctx, id, 10*time.Minute)
		if err != nil || d.DeadlineAtMs == nil {
			t.Fatalf("extend deadline: %+v, %v", d, err)
		}
		if at := time.UnixMilli(int64(*d.DeadlineAtMs)); at.Before(before.Add(10*time.Minute-time.Second)) || at.After(time.Now().Add(10*time.Minute+time.Second)) {
			t.Fatalf("the deadline is %v, want about 10 minutes from now", at)
		}

		// cgroup.max.descendants needs no controller: it works on any node.
		u, err := c.Update(ctx, id, UpdateRequest{Limits: LimitsUpdate{MaxDescendants: Ptr(uint32(5))}})
		if err != nil || u.Spec.Limits == nil || u.Spec.Limits.MaxDescendants == nil || *u.Spec.Limits.MaxDescendants != 5 {
			t.Fatalf("update max_descendants 5: %v (%+v)", err, u)
		}
		u, err = c.Update(ctx, id, UpdateRequest{Limits: LimitsUpdate{Lift: []string{"max_descendants"}}})
		if err != nil || (u.Spec.Limits != nil && u.Spec.Limits.MaxDescendants != nil) {
			t.Fatalf("lift max_descendants: %v (limits %+v)", err, u.Spec.Limits)
		}
		// pids_max: applied where the node has the pids controller, else a 422 naming it.
		node, err := c.Node(ctx)
		if err != nil {
			t.Fatalf("node: %v", err)
		}
		hasPids := false
		for _, ctl := range node.Cgroup.Controllers {
			hasPids = hasPids || ctl == "pids"
		}
		u, err = c.Update(ctx, id, UpdateRequest{Limits: LimitsUpdate{PidsMax: Ptr(uint64(64))}})
		if hasPids {
			if err != nil || u.Spec.Limits == nil || u.Spec.Limits.PidsMax == nil || *u.Spec.Limits.PidsMax != 64 {
				t.Fatalf("update pids_max 64: %v (%+v)", err, u)
			}
		} else {
			// The message names the controller (`controller "pids" is not available …`).
			apiErr(t, err, http.StatusUnprocessableEntity, `"pids"`)
		}

		// A wait with a timeout answers with the lifecycle still live.
		short := 100 * time.Millisecond
		w, err := c.Wait(ctx, id, &WaitOptions{Timeout: &short})
		if err != nil || w.State != StateRunning || w.State.Ended() {
			t.Fatalf("wait with a timeout: %+v, %v", w, err)
		}

		// A wait without one answers when the stop (on another request) has ended it.
		waited := make(chan error, 1)
		go func() {
			w, err := c.Wait(ctx, id, &WaitOptions{Lifecycle: info.Lifecycle})
			if err == nil && (w.State != StateStopped || w.StopReport == nil || w.StopReport.Reason != StopRequested) {
				err = fmt.Errorf("the wait answered %s, stop report %+v", w.State, w.StopReport)
			}
			waited <- err
		}()
		grace := 2 * time.Second
		rep, err := c.Stop(ctx, id, &StopOptions{Timeout: &grace})
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
		if rep.Reason != StopRequested || rep.Signalled != 1 || rep.KilledAfterGrace != 0 || rep.TotalMs <= 0 {
			t.Fatalf("stop report %+v", rep)
		}
		if err := <-waited; err != nil {
			t.Fatalf("wait: %v", err)
		}
		got, err = c.Get(ctx, id, nil)
		if err != nil || got.State != StateStopped || got.MainExit == nil || got.MainExit.ExitCode() != 128+15 {
			t.Fatalf("after the stop: %+v (main exit %+v), %v; want stopped by SIGTERM", got, got.MainExit, err)
		}

		if err := c.Delete(ctx, id, nil); err != nil {
			t.Fatalf("delete: %v", err)
		}
		_, err = c.Get(ctx, id, nil)
		apiErr(t, err, http.StatusNotFound, id)
		if !IsNotFound(err) {
			t.Fatal("IsNotFound is false for a 404")
		}
	})
}

// An ID with what a URL path must escape (space, ?, #, %, /-free) and non-ASCII.
func TestOddID(t *testing.T) {
	eachTransport(t, func(t *testing.T, c *Client) {
		ctx := ctxFor(t, 30*time.Second)
		id := fmt.Sprintf("goclient odd ?#%%+é %d", os.Getpid())
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = c.Kill(cctx, id, nil)
			if err := c.Delete(cctx, id, nil); err != nil && !IsNotFound(err) {
				t.Errorf("cleanup: delete %q: %v", id, err)
			}
		})
		info, err := c.Create(ctx, SandboxSpec{ID: id, Command: "sh", Args: []string{"-c", "exit 0"}})
		if err != nil || info.ID != id {
			t.Fatalf("create %q: %+v, %v", id, info, err)
		}
		w, err := c.Wait(ctx, id, nil)
		if err != nil || w.ID != id || !w.State.Ended() {
			t.Fatalf("wait %q: %+v, %v", id, w, err)
		}
		if err := c.Delete(ctx, id, nil); err != nil {
			t.Fatalf("delete %q: %v", id, err)
		}
		_, err = c.Get(ctx, id, nil)
		apiErr(t, err, http.StatusNotFound, "")
	})
}

func TestWaitExitCodeAndLogs(t *testing.T) {
	eachTransport(t, func(t *testing.T, c *Client) {
		ctx := ctxFor(t, 30*time.Second)
		id := newID(t, c, "exit")
		if _, err := c.Create(ctx, SandboxSpec{ID: id, Command: "sh", Args: []string{"-c", "echo hello from $0; echo to stderr >&2; exit 3", id}}); err != nil {
			t.Fatalf("create: %v", err)
		}
		w, err := c.Wait(ctx, id, nil)
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		if w.State != StateStopped || w.MainExit == nil || w.MainExit.Code == nil || *w.MainExit.Code != 3 || w.MainExit.ExitCode() != 3 {
			t.Fatalf("wait answered %s with main exit %+v, want stopped with code 3", w.State, w.MainExit)
		}
		if w.StopReport == nil || w.StopReport.Reason != StopMainExited {
			t.Fatalf("stop report %+v, want reason main_exited", w.StopReport)
		}
		logs, err := c.Logs(ctx, id, nil)
		if err != nil || logs != "hello from "+id+"\nto stderr\n" {
			t.Fatalf("logs: %q, %v", logs, err)
		}
	})
}

func TestKill(t *testing.T) {
	eachTransport(t, func(t *testing.T, c *Client) {
		ctx := ctxFor(t, 30*time.Second)
		id := newID(t, c, "kill")
		// A main process that ignores SIGTERM: only a kill ends it quickly.
		info, err := c.Create(ctx, SandboxSpec{ID: id, Command: "sh", Args: []string{"-c", "trap '' TERM; while :; do sleep 1; done"},
			Stop: &StopPolicy{GracePeriodMs: Ptr(uint64(60000))}})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		start := time.Now()
		rep, err := c.Kill(ctx, id, &SandboxOptions{Lifecycle: info.Lifecycle})
		if err != nil {
			t.Fatalf("kill: %v", err)
		}
		if rep.Reason != StopKilled || time.Since(start) > 20*time.Second {
			t.Fatalf("kill report %+v after %v", rep, time.Since(start))
		}
		w, err := c.Wait(ctx, id, nil)
		if err != nil || !w.State.Ended() || w.MainExit.ExitCode() != 128+9 {
			t.Fatalf("after the kill: %+v (main exit %+v), %v; want ended by SIGKILL", w, w.MainExit, err)
		}
		// Pausing it does not apply any more.
		_, err = c.Pause(ctx, id, nil)
		apiErr(t, err, http.StatusConflict, "")
	})
}

// collect reads items from s until one of id's events has type last, failing on a
// deadline (the stream's context).
func collect(t *testing.T, s *EventStream, id string, last EventType) []*SequencedEvent {
	t.Helper()
	var out []*SequencedEvent
	for {
		it, err := s.Next()
		if err != nil {
			t.Fatalf("the stream ended before %s's %s (after %d events): %v", id, last, len(out), err)
		}
		if it.Sequenced == nil {
			t.Fatalf("an item without an event: %+v (%s)", it, it.Data)
		}
		ev := it.Sequenced
		if it.Event != string(ev.Type) || it.ID != fmt.Sprint(ev.Seq) || s.LastID() != it.ID {
			t.Fatalf("item event:%s id:%s (LastID %s) disagrees with its data %s", it.Event, it.ID, s.LastID(), it.Data)
		}
		if ev.ID != id {
			t.Fatalf("a stream filtered by id=%s served an event of %s", id, ev.ID)
		}
		if len(out) > 0 && ev.Seq <= out[len(out)-1].Seq {
			t.Fatalf("seq %d after %d", ev.Seq, out[len(out)-1].Seq)
		}
		out = append(out, ev)
		if ev.Type == last {
			return out
		}
	}
}

func TestEvents(t *testing.T) {
	eachTransport(t, func(t *testing.T, c *Client) {
		ctx := ctxFor(t, 30*time.Second)
		id := newID(t, c, "events")
		s, err := c.Events(ctx, &EventsOptions{ID: id})
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		defer s.Close()
		info, err := c.Create(ctx, SandboxSpec{ID: id, Command: "sh", Args: []string{"-c", "exit 7"}})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		evs := collect(t, s, id, EventStopped)
		var types []string
		for _, ev := range evs {
			types = append(types, string(ev.Type))
			if ev.Lifecycle != info.Lifecycle || ev.AtMs == 0 {
				t.Fatalf("event %+v: want lifecycle %s and a time", ev, info.Lifecycle)
			}
		}
		if got := strings.Join(types, ","); got != "started,main_exited,stopping,stopped" {
			t.Fatalf("events %s, want started,main_exited,stopping,stopped", got)
		}
		if evs[0].Pid == nil || *evs[0].Pid <= 0 {
			t.Fatalf("started without a pid: %+v", evs[0])
		}
		if evs[1].Status == nil || evs[1].Status.ExitCode() != 7 {
			t.Fatalf("main_exited with status %+v, want code 7", evs[1].Status)
		}
		if evs[2].Reason != StopMainExited {
			t.Fatalf("stopping with reason %q", evs[2].Reason)
		}
		if evs[3].Report == nil || evs[3].Report.Reason != StopMainExited {
			t.Fatalf("stopped with report %+v", evs[3].Report)
		}

		// Resuming from before the first replays the same events (Since, then
		// Last-Event-ID).
		for _, opts := range []*EventsOptions{
			{ID: id, Since: Ptr(evs[0].Seq - 1)},
			{ID: id, LastEventID: fmt.Sprint(evs[0].Seq - 1)},
		} {
			r, err := c.Events(ctx, opts)
			if err != nil {
				t.Fatalf("events %+v: %v", opts, err)
			}
			again := collect(t, r, id, EventStopped)
			r.Close()
			if len(again) != len(evs) {
				t.Fatalf("the replay has %d events, want %d", len(again), len(evs))
			}
			for i := range evs {
				if again[i].Seq != evs[i].Seq || again[i].Type != evs[i].Type {
					t.Fatalf("replayed event %d: %d %s, want %d %s", i, again[i].Seq, again[i].Type, evs[i].Seq, evs[i].Type)
				}
			}
		}

		// A cursor past the newest event is a 422 naming it.
		_, err = c.Events(ctx, &EventsOptions{Since: Ptr(uint64(1) << 60)})
		apiErr(t, err, http.StatusUnprocessableEntity, "past the newest event")
	})
}

func TestRestartEvents(t *testing.T) {
	eachTransport(t, func(t *testing.T, c *Client) {
		ctx := ctxFor(t, 30*time.Second)
		id := newID(t, c, "restart")
		s, err := c.Events(ctx, &EventsOptions{ID: id})
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		defer s.Close()
		before := uint64(time.Now().UnixMilli())
		first, err := c.Create(ctx, SandboxSpec{ID: id, Command: "sh", Args: []string{"-c", "exit 1"},
			Restart: &RestartPolicy{Mode: RestartOnFailure, MaxRestarts: Ptr(uint32(1)), InitialBackoffMs: Ptr(uint64(200))}})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		evs := collect(t, s, id, EventRestarting)
		r := evs[len(evs)-1]
		if r.Attempt != 1 || r.Lifecycle != first.Lifecycle {
			t.Fatalf("restarting %+v: want attempt 1 of lifecycle %s", r, first.Lifecycle)
		}
		// The event's time (after the create, not in the future), and the restart's: due
		// the 200 ms backoff after the stop, which came between the create and now.
		now := uint64(time.Now().UnixMilli())
		if r.AtMs < before || r.AtMs > now || r.RestartAtMs < before+200 || r.RestartAtMs > now+200 {
			t.Fatalf("restarting at_ms %d, restart at %d; want the event in [%d, %d] and the restart in [%d, %d]", r.AtMs, r.RestartAtMs, before, now, before+200, now+200)
		}
		// The restart is a new lifecycle of the ID, which fails again and is not restarted.
		evs = collect(t, s, id, EventStopped)
		if evs[0].Type != EventStarted || evs[0].Lifecycle == first.Lifecycle {
			t.Fatalf("after restarting: %s of lifecycle %s, want started of a new lifecycle", evs[0].Type, evs[0].Lifecycle)
		}
		w, err := c.Wait(ctx, id, nil)
		if err != nil || w.Lifecycle != evs[0].Lifecycle || w.RestartCount != 1 || w.MainExit.ExitCode() != 1 {
			t.Fatalf("wait: %+v, %v; want the second lifecycle, restart_count 1, exit code 1", w, err)
		}
		old, err := c.Get(ctx, id, &SandboxOptions{Lifecycle: first.Lifecycle})
		if err == nil && old.Current {
			t.Fatalf("the first lifecycle is still current: %+v", old)
		}
	})
}

func TestEventStreamEndsOnCancel(t *testing.T) {
	eachTransport(t, func(t *testing.T, c *Client) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s, err := c.Events(ctx, &EventsOptions{ID: "goclient-nothing-happens-here"})
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		defer s.Close()
		done := make(chan error, 1)
		go func() {
			_, err := s.Next() // no event comes: blocks until the cancel
			done <- err
		}()
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Next after the cancel: %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Next did not return within 10 s of the cancel")
		}
		// A wait ends with its context too.
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		id := newID(t, c, "waitcancel")
		if _, err := c.Create(wctx, SandboxSpec{ID: id, Command: "sleep", Args: []string{"300"}}); err != nil {
			t.Fatalf("create: %v", err)
		}
		short, scancel := context.WithTimeout(wctx, 300*time.Millisecond)
		defer scancel()
		_, err = c.Wait(short, id, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a wait whose context expired: %v, want context.DeadlineExceeded", err)
		}
	})
}

func TestErrors(t *testing.T) {
	eachTransport(t, func(t *testing.T, c *Client) {
		ctx := ctxFor(t, 30*time.Second)
		_, err := c.Get(ctx, "goclient-no-such-sandbox", nil)
		apiErr(t, err, http.StatusNotFound, "goclient-no-such-sandbox")

		// An ID the API refuses: a 400 naming the field.
		_, err = c.Create(ctx, SandboxSpec{ID: "cgroup.procs", Command: "true"})
		apiErr(t, err, http.StatusBadRequest, "id")

		// A program that cannot be started: a 422, nothing left.
		id := newID(t, c, "noexec")
		_, err = c.Create(ctx, SandboxSpec{ID: id, Command: "/nonexistent/goclient"})
		apiErr(t, err, http.StatusUnprocessableEntity, "/nonexistent/goclient")

		// Deleting a running sandbox does not apply; creating its ID again neither.
		id = newID(t, c, "conflict")
		if _, err := c.Create(ctx, SandboxSpec{ID: id, Command: "sleep", Args: []string{"300"}}); err != nil {
			t.Fatalf("create: %v", err)
		}
		err = c.Delete(ctx, id, nil)
		apiErr(t, err, http.StatusConflict, "")
		_, err = c.Create(ctx, SandboxSpec{ID: id, Command: "sleep", Args: []string{"300"}})
		apiErr(t, err, http.StatusConflict, id)

		// A client-side error is no APIError.
		_, err = c.Create(ctx, SandboxSpec{ID: id, Command: "x", Network: &Network{}})
		if err == nil || StatusCode(err) != 0 {
			t.Fatalf("an invalid Network: %v", err)
		}
	})
}

func TestTCPNeedsTheToken(t *testing.T) {
	u := os.Getenv("PADDOCK_URL")
	if u == "" {
		if require() {
			t.Fatal("PADDOCK_TEST_REQUIRE=1 but PADDOCK_URL is not set")
		}
		t.Skip("no PADDOCK_URL")
	}
	c, err := NewTCP(u, "not-the-token-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.List(ctxFor(t, 10*time.Second), nil)
	apiErr(t, err, http.StatusUnauthorized, "")
	if _, err := NewTCP(u, ""); err == nil {
		t.Fatal("NewTCP without a token succeeded")
	}
}

func TestNodeAndHealth(t *testing.T) {
	eachTransport(t, func(t *testing.T, c *Client) {
		ctx := ctxFor(t, 30*time.Second)
		for name, f := range map[string]func(context.Context) (*StatusBody, error){"healthz": c.Healthz, "readyz": c.Readyz} {
			if st, err := f(ctx); err != nil || st.Status == "" {
				t.Fatalf("%s: %+v, %v", name, st, err)
			}
		}
		node, err := c.Node(ctx)
		if err != nil || node.Version == "" || node.Cgroup.Mount == "" || node.Capacity.CPUs <= 0 || node.Draining {
			t.Fatalf("node: %+v, %v", node, err)
		}
		m, err := c.Metrics(ctx)
		if err != nil || !strings.Contains(m, "paddock_") {
			t.Fatalf("metrics: %d bytes, %v", len(m), err)
		}
		doc, err := c.OpenAPI(ctx)
		if err != nil || !strings.Contains(string(doc), `"/v1/sandboxes/{id}/wait"`) {
			t.Fatalf("openapi: %d bytes, %v", len(doc), err)
		}

		// Drained, a create is a 503 with Retry-After; undrained, it is admitted again.
		dr, err := c.Drain(ctx, nil)
		if err != nil || !dr.Draining || dr.WasDraining {
			t.Fatalf("drain: %+v, %v", dr, err)
		}
		undrained := false
		defer func() {
			if !undrained {
				if _, err := c.Undrain(context.Background()); err != nil {
					t.Errorf("undrain: %v", err)
				}
			}
		}()
		id := newID(t, c, "drained")
		_, err = c.Create(ctx, SandboxSpec{ID: id, Command: "true"})
		e := apiErr(t, err, http.StatusServiceUnavailable, "draining")
		if e.RetryAfter != 30*time.Second {
			t.Fatalf("Retry-After %v, want 30s", e.RetryAfter)
		}
		if n, err := c.Node(ctx); err != nil || !n.Draining || n.DrainingSinceMs == nil {
			t.Fatalf("node while drained: %+v, %v", n, err)
		}
		// A drain with a body (stop: nothing of this test runs).
		g := Duration(time.Second)
		if dr, err := c.Drain(ctx, &DrainRequest{Stop: false, Grace: &g}); err != nil || !dr.WasDraining {
			t.Fatalf("drain again: %+v, %v", dr, err)
		}
		ur, err := c.Undrain(ctx)
		undrained = err == nil
		if err != nil || ur.Draining || !ur.WasDraining {
			t.Fatalf("undrain: %+v, %v", ur, err)
		}
		if _, err := c.Create(ctx, SandboxSpec{ID: id, Command: "true"}); err != nil {
			t.Fatalf("create after the undrain: %v", err)
		}
		if w, err := c.Wait(ctx, id, nil); err != nil || w.MainExit.ExitCode() != 0 {
			t.Fatalf("wait: %+v, %v", w, err)
		}
	})
}
