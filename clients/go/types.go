package paddock

import (
	"encoding/json"
	"fmt"
	"sort"
)

// The wire types of the paddock API, one Go type per schema of the OpenAPI document
// (crates/paddock/openapi.json, components/schemas). The JSON field names are checked
// against the document by TestSchemaFieldsMatch (drift_test.go).
//
// Conventions: a field the document marks nullable or optional is a pointer (or a nil
// slice or map) with `omitempty`, so a zero value sends nothing and the daemon applies
// its default; integers the kernel takes as u64 are uint64.

// State is a lifecycle's state.
type State string

const (
	StateCreating    State = "creating"
	StateRunning     State = "running"
	StateStopping    State = "stopping"
	StateStopped     State = "stopped"
	StateFailed      State = "failed"
	StateQuarantined State = "quarantined"
)

// Ended reports whether a lifecycle in this state has ended (what GET .../wait waits for).
func (s State) Ended() bool {
	return s == StateStopped || s == StateFailed || s == StateQuarantined
}

// StopReason says why a stop began.
type StopReason string

const (
	StopRequested  StopReason = "requested"
	StopKilled     StopReason = "killed"
	StopMainExited StopReason = "main_exited"
	StopShutdown   StopReason = "shutdown"
	StopRecovered  StopReason = "recovered"
	StopDeadline   StopReason = "deadline"
	StopOOM        StopReason = "oom"
	StopDrain      StopReason = "drain"
)

// OnMainExit says what happens when the main process exits.
type OnMainExit string

const (
	OnMainExitStop        OnMainExit = "stop"
	OnMainExitKeepRunning OnMainExit = "keep_running"
)

// RestartMode is a restart policy's mode.
type RestartMode string

const (
	RestartNever     RestartMode = "never"
	RestartOnFailure RestartMode = "on_failure"
	RestartAlways    RestartMode = "always"
)

// CgroupFsSpec is how a jail shows the cgroup file system.
type CgroupFsSpec string

const (
	CgroupFsUnchanged CgroupFsSpec = "unchanged"
	CgroupFsReadonly  CgroupFsSpec = "readonly"
	CgroupFsHidden    CgroupFsSpec = "hidden"
)

// LandlockModeSpec is a jail's Landlock mode.
type LandlockModeSpec string

const (
	LandlockAuto     LandlockModeSpec = "auto"
	LandlockOff      LandlockModeSpec = "off"
	LandlockRequired LandlockModeSpec = "required"
)

// Protocol of a published port.
type Protocol string

const (
	ProtocolTCP Protocol = "tcp"
	ProtocolUDP Protocol = "udp"
)

// SeccompBuiltin names a built-in seccomp filter.
type SeccompBuiltin string

const (
	SeccompDefault    SeccompBuiltin = "default"
	SeccompUnconfined SeccompBuiltin = "unconfined"
)

// MountType is a jail mount's type.
type MountType string

const (
	MountBind   MountType = "bind"
	MountTmpfs  MountType = "tmpfs"
	MountProc   MountType = "proc"
	MountSysfs  MountType = "sysfs"
	MountMqueue MountType = "mqueue"
)

// Namespace names a namespace a jail unshares.
type Namespace string

const (
	NamespacePID    Namespace = "pid"
	NamespaceMount  Namespace = "mount"
	NamespaceIPC    Namespace = "ipc"
	NamespaceUTS    Namespace = "uts"
	NamespaceCgroup Namespace = "cgroup"
	NamespaceUser   Namespace = "user"
)

// EventType is the `type` of an event (and the server-sent event's `event:` field).
type EventType string

const (
	EventStarted               EventType = "started"
	EventAdopted               EventType = "adopted"
	EventStartFailed           EventType = "start_failed"
	EventMainExited            EventType = "main_exited"
	EventStopping              EventType = "stopping"
	EventLeakedProcessesKilled EventType = "leaked_processes_killed"
	EventStopped               EventType = "stopped"
	EventQuarantined           EventType = "quarantined"
	EventFailed                EventType = "failed"
	EventOOM                   EventType = "oom"
	EventLimitsUpdated         EventType = "limits_updated"
	EventPaused                EventType = "paused"
	EventResumed               EventType = "resumed"
	EventDeadlineSet           EventType = "deadline_set"
	EventRestarting            EventType = "restarting"
	EventRestartCancelled      EventType = "restart_cancelled"
	EventDeadline              EventType = "deadline"
	// EventLagged is a stream item, not an event: the stream could not deliver
	// Lagged.Missed events (the daemon's ring had dropped them).
	EventLagged EventType = "lagged"
)

// ---- sandboxes ---------------------------------------------------------------------

// SandboxSpec is what a sandbox runs and how (schema SandboxSpec).
type SandboxSpec struct {
	ID         string            `json:"id"`
	Command    string            `json:"command"`
	Args       []string          `json:"args,omitempty"`
	ClearEnv   bool              `json:"clear_env,omitempty"`
	Cwd        *string           `json:"cwd,omitempty"`
	DeadlineMs *uint64           `json:"deadline_ms,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	Jail       *JailSpec         `json:"jail,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Limits     *Limits           `json:"limits,omitempty"`
	Network    *Network          `json:"network,omitempty"`
	OnMainExit OnMainExit        `json:"on_main_exit,omitempty"`
	Restart    *RestartPolicy    `json:"restart,omitempty"`
	Stdio      *StdioSpec        `json:"stdio,omitempty"`
	Stop       *StopPolicy       `json:"stop,omitempty"`
}

// CreateRequest is the body of POST /v1/sandboxes: a spec, and `start`, which may only
// be true (the daemon always starts what it creates).
type CreateRequest struct {
	SandboxSpec
	Start *bool `json:"start,omitempty"`
}

// StopPolicy is how a sandbox is stopped.
type StopPolicy struct {
	GracePeriodMs *uint64 `json:"grace_period_ms,omitempty"`
	KillTimeoutMs *uint64 `json:"kill_timeout_ms,omitempty"`
	Signal        *int32  `json:"signal,omitempty"`
}

// RestartPolicy is whether and when an ID is started again after its main process exits.
type RestartPolicy struct {
	Mode             RestartMode `json:"mode,omitempty"`
	InitialBackoffMs *uint64     `json:"initial_backoff_ms,omitempty"`
	MaxBackoffMs     *uint64     `json:"max_backoff_ms,omitempty"`
	MaxRestarts      *uint32     `json:"max_restarts,omitempty"`
}

// Limits are a sandbox's resource limits; nil leaves the kernel's default.
type Limits struct {
	CPUWeight      *uint32           `json:"cpu_weight,omitempty"`
	CPUs           *float64          `json:"cpus,omitempty"`
	CpusetCPUs     *string           `json:"cpuset_cpus,omitempty"`
	CpusetMems     *string           `json:"cpuset_mems,omitempty"`
	HugetlbMax     map[string]uint64 `json:"hugetlb_max,omitempty"`
	IOMax          []IoDeviceLimit   `json:"io_max,omitempty"`
	IOWeight       *uint32           `json:"io_weight,omitempty"`
	MaxDepth       *uint32           `json:"max_depth,omitempty"`
	MaxDescendants *uint32           `json:"max_descendants,omitempty"`
	MemoryHigh     *uint64           `json:"memory_high,omitempty"`
	MemoryLow      *uint64           `json:"memory_low,omitempty"`
	MemoryMax      *uint64           `json:"memory_max,omitempty"`
	MemoryMin      *uint64           `json:"memory_min,omitempty"`
	MemorySwapMax  *uint64           `json:"memory_swap_max,omitempty"`
	OOMGroup       *bool             `json:"oom_group,omitempty"`
	PidsMax        *uint64           `json:"pids_max,omitempty"`
}

// IoDeviceLimit is one block device's io.max line.
type IoDeviceLimit struct {
	Device    string  `json:"device"`
	ReadBps   *uint64 `json:"read_bps,omitempty"`
	ReadIops  *uint64 `json:"read_iops,omitempty"`
	WriteBps  *uint64 `json:"write_bps,omitempty"`
	WriteIops *uint64 `json:"write_iops,omitempty"`
}

// LimitsUpdate is the `limits` of a PATCH: a field set replaces the limit in force, a
// field named in Lift is sent as null (the limit is lifted), anything else stays.
type LimitsUpdate struct {
	CPUWeight      *uint32           `json:"cpu_weight,omitempty"`
	CPUs           *float64          `json:"cpus,omitempty"`
	CpusetCPUs     *string           `json:"cpuset_cpus,omitempty"`
	CpusetMems     *string           `json:"cpuset_mems,omitempty"`
	HugetlbMax     map[string]uint64 `json:"hugetlb_max,omitempty"`
	IOMax          []IoDeviceLimit   `json:"io_max,omitempty"`
	IOWeight       *uint32           `json:"io_weight,omitempty"`
	MaxDepth       *uint32           `json:"max_depth,omitempty"`
	MaxDescendants *uint32           `json:"max_descendants,omitempty"`
	MemoryHigh     *uint64           `json:"memory_high,omitempty"`
	MemoryLow      *uint64           `json:"memory_low,omitempty"`
	MemoryMax      *uint64           `json:"memory_max,omitempty"`
	MemoryMin      *uint64           `json:"memory_min,omitempty"`
	MemorySwapMax  *uint64           `json:"memory_swap_max,omitempty"`
	OOMGroup       *bool             `json:"oom_group,omitempty"`
	PidsMax        *uint64           `json:"pids_max,omitempty"`

	// Lift names limits, by their JSON name ("memory_max"), to send as null: lifted.
	Lift []string `json:"-"`
}

// MarshalJSON sends the fields set, and null for each name in Lift.
func (u LimitsUpdate) MarshalJSON() ([]byte, error) {
	type plain LimitsUpdate
	b, err := json.Marshal(plain(u))
	if err != nil || len(u.Lift) == 0 {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	known := jsonNames(LimitsUpdate{})
	for _, name := range u.Lift {
		if !known[name] {
			return nil, fmt.Errorf("paddock: LimitsUpdate.Lift: %q is not a limit", name)
		}
		if _, set := m[name]; set {
			return nil, fmt.Errorf("paddock: LimitsUpdate: %q is both set and lifted", name)
		}
		m[name] = json.RawMessage("null")
	}
	return json.Marshal(m)
}

// UpdateRequest is the body of PATCH /v1/sandboxes/{id}.
type UpdateRequest struct {
	Limits LimitsUpdate `json:"limits"`
}

// Network is a sandbox's network: exactly one of Mode ("host" or "isolated"), Named or
// Veth. The zero Network is not valid; use NetworkHost, NetworkIsolated, NetworkNamed or
// NetworkVeth.
type Network struct {
	Mode  string    `json:"-"`
	Named string    `json:"named,omitempty"`
	Veth  *VethSpec `json:"veth,omitempty"`
}

// NetworkHost is the daemon's network namespace.
func NetworkHost() *Network { return &Network{Mode: "host"} }

// NetworkIsolated is a new network namespace with only loopback.
func NetworkIsolated() *Network { return &Network{Mode: "isolated"} }

// NetworkNamed is the namespace /run/netns/NAME.
func NetworkNamed(name string) *Network { return &Network{Named: name} }

// NetworkVeth is a network of the sandbox's own.
func NetworkVeth(v VethSpec) *Network { return &Network{Veth: &v} }

// MarshalJSON writes the one form that is set.
func (n Network) MarshalJSON() ([]byte, error) {
	set := 0
	if n.Mode != "" {
		set++
	}
	if n.Named != "" {
		set++
	}
	if n.Veth != nil {
		set++
	}
	if set != 1 {
		return nil, fmt.Errorf("paddock: Network: set exactly one of Mode, Named, Veth (%d set)", set)
	}
	switch {
	case n.Mode != "":
		return json.Marshal(n.Mode)
	case n.Named != "":
		return json.Marshal(map[string]string{"named": n.Named})
	default:
		return json.Marshal(map[string]*VethSpec{"veth": n.Veth})
	}
}

// UnmarshalJSON reads any of the forms.
func (n *Network) UnmarshalJSON(b []byte) error {
	*n = Network{}
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &n.Mode)
	}
	type plain Network
	return json.Unmarshal(b, (*plain)(n))
}

// VethSpec is a network of the sandbox's own (`{"veth": {…}}`).
type VethSpec struct {
	Isolate bool          `json:"isolate,omitempty"`
	NAT     bool          `json:"nat,omitempty"`
	Publish []PublishSpec `json:"publish,omitempty"`
	Taps    []TapSpec     `json:"taps,omitempty"`
}

// PublishSpec is a host port forwarded to the sandbox.
type PublishSpec struct {
	HostPort    uint16   `json:"host_port"`
	SandboxPort uint16   `json:"sandbox_port"`
	Protocol    Protocol `json:"protocol,omitempty"`
}

// TapSpec is a tap device made inside the sandbox's network namespace.
type TapSpec struct {
	Name string `json:"name"`
	// Address is the tap's address in the sandbox's namespace, with its prefix length
	// ("172.31.0.1/30"); nil: none.
	Address    *string `json:"address,omitempty"`
	UID        *uint32 `json:"uid,omitempty"`
	GID        *uint32 `json:"gid,omitempty"`
	MultiQueue bool    `json:"multi_queue,omitempty"`
	VnetHdr    bool    `json:"vnet_hdr,omitempty"`
}

// StdioSpec is where the main process's standard streams go; a nil field is the
// daemon's default.
type StdioSpec struct {
	Stdin  *StdioTarget `json:"stdin,omitempty"`
	Stdout *StdioTarget `json:"stdout,omitempty"`
	Stderr *StdioTarget `json:"stderr,omitempty"`
}

// StdioTarget is "null", "log" (stdout, stderr) or a file: set either Kind or File.
type StdioTarget struct {
	Kind string `json:"-"`
	File string `json:"file"`
}

// StdioNull is /dev/null.
func StdioNull() *StdioTarget { return &StdioTarget{Kind: "null"} }

// StdioLog is the sandbox's log (GET .../logs).
func StdioLog() *StdioTarget { return &StdioTarget{Kind: "log"} }

// StdioFile is a file the daemon opens.
func StdioFile(path string) *StdioTarget { return &StdioTarget{File: path} }

// MarshalJSON writes Kind as a string, or {"file": File}.
func (t StdioTarget) MarshalJSON() ([]byte, error) {
	if (t.Kind == "") == (t.File == "") {
		return nil, fmt.Errorf("paddock: StdioTarget: set exactly one of Kind and File")
	}
	if t.Kind != "" {
		return json.Marshal(t.Kind)
	}
	return json.Marshal(map[string]string{"file": t.File})
}

// UnmarshalJSON reads either form.
func (t *StdioTarget) UnmarshalJSON(b []byte) error {
	*t = StdioTarget{}
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &t.Kind)
	}
	type plain StdioTarget
	return json.Unmarshal(b, (*plain)(t))
}

// ---- jail ----------------------------------------------------------------------------

// JailSpec confines a sandbox (docs/jail.md).
type JailSpec struct {
	Filesystem *FilesystemSpec `json:"filesystem,omitempty"`
	Hostname   *string         `json:"hostname,omitempty"`
	Init       *bool           `json:"init,omitempty"`
	Landlock   *LandlockSpec   `json:"landlock,omitempty"`
	Namespaces []Namespace     `json:"namespaces,omitempty"`
	Privileges *PrivilegesSpec `json:"privileges,omitempty"`
	Rlimits    RlimitsSpec     `json:"rlimits,omitempty"`
	Seccomp    *SeccompSpec    `json:"seccomp,omitempty"`
	User       *UserSpec       `json:"user,omitempty"`
	UserNs     *UserNsSpec     `json:"user_ns,omitempty"`
}

// FilesystemSpec is a jail's file system.
type FilesystemSpec struct {
	Cgroupfs    *CgroupFsSpec `json:"cgroupfs,omitempty"`
	Devices     []string      `json:"devices,omitempty"`
	MaskedPaths []string      `json:"masked_paths,omitempty"`
	MinimalDev  *bool         `json:"minimal_dev,omitempty"`
	Mounts      []MountSpec   `json:"mounts,omitempty"`
	Readonly    bool          `json:"readonly,omitempty"`
	Rootfs      *string       `json:"rootfs,omitempty"`
}

// MountSpec is one mount of a jail; Type is "bind", "tmpfs", "proc", "sysfs" or
// "mqueue", and only that type's fields may be set.
type MountSpec struct {
	Type     MountType `json:"type"`
	Target   string    `json:"target"`
	Source   string    `json:"source,omitempty"`
	Readonly bool      `json:"readonly,omitempty"`
	Nodev    bool      `json:"nodev,omitempty"`
	Noexec   bool      `json:"noexec,omitempty"`
	Nosuid   bool      `json:"nosuid,omitempty"`
	Mode     *uint32   `json:"mode,omitempty"`
	Size     *uint64   `json:"size,omitempty"`
}

// LandlockSpec is a jail's Landlock rules.
type LandlockSpec struct {
	Mode       LandlockModeSpec `json:"mode,omitempty"`
	TCPBind    []uint16         `json:"tcp_bind,omitempty"`
	TCPConnect []uint16         `json:"tcp_connect,omitempty"`
}

// PrivilegesSpec is a jail's capabilities and no_new_privs.
type PrivilegesSpec struct {
	CapAdd     []string `json:"cap_add,omitempty"`
	CapDrop    []string `json:"cap_drop,omitempty"`
	NoNewPrivs *bool    `json:"no_new_privs,omitempty"`
}

// UserSpec is the user a jail runs as.
type UserSpec struct {
	Dynamic bool       `json:"dynamic,omitempty"`
	UID     *IdOrName  `json:"uid,omitempty"`
	GID     *IdOrName  `json:"gid,omitempty"`
	Groups  []IdOrName `json:"groups,omitempty"`
}

// IdOrName is a user or group by number (Name empty) or by name.
type IdOrName struct {
	ID   uint32
	Name string
}

// MarshalJSON writes the number, or the name.
func (v IdOrName) MarshalJSON() ([]byte, error) {
	if v.Name != "" {
		return json.Marshal(v.Name)
	}
	return json.Marshal(v.ID)
}

// UnmarshalJSON reads a number or a name.
func (v *IdOrName) UnmarshalJSON(b []byte) error {
	*v = IdOrName{}
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &v.Name)
	}
	return json.Unmarshal(b, &v.ID)
}

// UserNsSpec is a user namespace's id maps.
type UserNsSpec struct {
	UIDMap []IdMapSpec `json:"uid_map"`
	GIDMap []IdMapSpec `json:"gid_map"`
}

// IdMapSpec is one line of an id map.
type IdMapSpec struct {
	Inside  uint32 `json:"inside"`
	Outside uint32 `json:"outside"`
	Count   uint32 `json:"count"`
}

// LimitValue is an rlimit value: a number, or Unlimited (RLIM_INFINITY).
type LimitValue struct {
	Value     uint64
	Unlimited bool
}

// MarshalJSON writes the number or "unlimited".
func (v LimitValue) MarshalJSON() ([]byte, error) {
	if v.Unlimited {
		return []byte(`"unlimited"`), nil
	}
	return json.Marshal(v.Value)
}

// UnmarshalJSON reads a number, "unlimited" or "infinity".
func (v *LimitValue) UnmarshalJSON(b []byte) error {
	*v = LimitValue{}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s != "unlimited" && s != "infinity" {
			return fmt.Errorf("paddock: LimitValue: %q is neither a number nor unlimited", s)
		}
		v.Unlimited = true
		return nil
	}
	return json.Unmarshal(b, &v.Value)
}

// RlimitRange is a soft and an optional hard limit.
type RlimitRange struct {
	Soft LimitValue  `json:"soft"`
	Hard *LimitValue `json:"hard,omitempty"`
}

// NamedRlimit is an rlimit by name ("nofile", "NOFILE", "RLIMIT_NOFILE").
type NamedRlimit struct {
	Name string      `json:"name"`
	Soft LimitValue  `json:"soft"`
	Hard *LimitValue `json:"hard,omitempty"`
}

// RlimitsSpec is a jail's rlimits, applied in order; sent as the document's list form
// (it also reads the map form, in name order).
type RlimitsSpec []NamedRlimit

// UnmarshalJSON reads the list or the map form.
func (r *RlimitsSpec) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '{' {
		var m map[string]RlimitRange
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		names := make([]string, 0, len(m))
		for k := range m {
			names = append(names, k)
		}
		sort.Strings(names)
		out := make(RlimitsSpec, 0, len(m))
		for _, k := range names {
			out = append(out, NamedRlimit{Name: k, Soft: m[k].Soft, Hard: m[k].Hard})
		}
		*r = out
		return nil
	}
	return json.Unmarshal(b, (*[]NamedRlimit)(r))
}

// SeccompSpec is a built-in filter (Builtin) or an OCI `linux.seccomp` profile (Profile).
type SeccompSpec struct {
	Builtin SeccompBuiltin
	Profile *SeccompProfile
}

// MarshalJSON writes the builtin's name or the profile.
func (s SeccompSpec) MarshalJSON() ([]byte, error) {
	if (s.Builtin == "") == (s.Profile == nil) {
		return nil, fmt.Errorf("paddock: SeccompSpec: set exactly one of Builtin and Profile")
	}
	if s.Builtin != "" {
		return json.Marshal(s.Builtin)
	}
	return json.Marshal(s.Profile)
}

// UnmarshalJSON reads either form.
func (s *SeccompSpec) UnmarshalJSON(b []byte) error {
	*s = SeccompSpec{}
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &s.Builtin)
	}
	s.Profile = &SeccompProfile{}
	return json.Unmarshal(b, s.Profile)
}

// SeccompProfile is an OCI `linux.seccomp` object; members other than defaultAction and
// syscalls (architectures, flags, …) are kept in Extra.
type SeccompProfile struct {
	DefaultAction string                     `json:"defaultAction"`
	Syscalls      []SeccompRule              `json:"syscalls,omitempty"`
	Extra         map[string]json.RawMessage `json:"-"`
}

// MarshalJSON writes the members and Extra.
func (p SeccompProfile) MarshalJSON() ([]byte, error) {
	type plain SeccompProfile
	return marshalWithExtra(plain(p), p.Extra)
}

// UnmarshalJSON keeps unknown members in Extra.
func (p *SeccompProfile) UnmarshalJSON(b []byte) error {
	type plain SeccompProfile
	var v plain
	extra, err := unmarshalWithExtra(b, &v)
	if err != nil {
		return err
	}
	*p = SeccompProfile(v)
	p.Extra = extra
	return nil
}

// SeccompRule is one rule of a profile; members other than names and action (args,
// errnoRet, …) are kept in Extra.
type SeccompRule struct {
	Names  []string                   `json:"names"`
	Action string                     `json:"action"`
	Extra  map[string]json.RawMessage `json:"-"`
}

// MarshalJSON writes the members and Extra.
func (r SeccompRule) MarshalJSON() ([]byte, error) {
	type plain SeccompRule
	return marshalWithExtra(plain(r), r.Extra)
}

// UnmarshalJSON keeps unknown members in Extra.
func (r *SeccompRule) UnmarshalJSON(b []byte) error {
	type plain SeccompRule
	var v plain
	extra, err := unmarshalWithExtra(b, &v)
	if err != nil {
		return err
	}
	*r = SeccompRule(v)
	r.Extra = extra
	return nil
}

// JailStatus is what a jail came to be (uid, gid, capabilities, Landlock ABI).
type JailStatus struct {
	UID          uint32           `json:"uid"`
	GID          uint32           `json:"gid"`
	Groups       []uint32         `json:"groups"`
	Capabilities []string         `json:"capabilities"`
	LandlockMode LandlockModeSpec `json:"landlock_mode"`
	LandlockABI  *int32           `json:"landlock_abi,omitempty"`
	DynamicUID   *uint32          `json:"dynamic_uid,omitempty"`
}

// ---- state ---------------------------------------------------------------------------

// SandboxInfo is one lifecycle of a sandbox.
type SandboxInfo struct {
	ID             string          `json:"id"`
	Lifecycle      string          `json:"lifecycle"`
	State          State           `json:"state"`
	Paused         bool            `json:"paused"`
	Current        bool            `json:"current"`
	CgroupPath     string          `json:"cgroup_path"`
	Stuck          []StuckProcess  `json:"stuck"`
	CreatedAtMs    uint64          `json:"created_at_ms"`
	Spec           SandboxSpec     `json:"spec"`
	DeadlineAtMs   *uint64         `json:"deadline_at_ms,omitempty"`
	Error          *string         `json:"error,omitempty"`
	Jail           *JailStatus     `json:"jail,omitempty"`
	MainExit       *MainExit       `json:"main_exit,omitempty"`
	Network        *NetStatus      `json:"network,omitempty"`
	Pid            *int32          `json:"pid,omitempty"`
	RestartCount   int32           `json:"restart_count,omitempty"`
	RestartPending *PendingRestart `json:"restart_pending,omitempty"`
	StopReport     *StopReport     `json:"stop_report,omitempty"`
}

// MainExit is how the main process ended: Code, or Signal.
type MainExit struct {
	Code       *int32 `json:"code,omitempty"`
	Signal     *int32 `json:"signal,omitempty"`
	CoreDumped bool   `json:"core_dumped"`
}

// ExitCode is the code a shell would show: the code, or 128+signal.
func (m *MainExit) ExitCode() int {
	switch {
	case m == nil:
		return -1
	case m.Code != nil:
		return int(*m.Code)
	case m.Signal != nil:
		return 128 + int(*m.Signal)
	}
	return -1
}

// PendingRestart is a restart the policy has scheduled.
type PendingRestart struct {
	Attempt    uint32 `json:"attempt"`
	SinceReset uint32 `json:"since_reset"`
	AtMs       uint64 `json:"at_ms"`
}

// NetStatus is a veth network as it was set up.
type NetStatus struct {
	Owner          string   `json:"owner"`
	Netns          string   `json:"netns"`
	HostIfname     string   `json:"host_ifname"`
	SandboxIfname  string   `json:"sandbox_ifname"`
	Subnet         string   `json:"subnet"`
	HostAddress    string   `json:"host_address"`
	SandboxAddress string   `json:"sandbox_address"`
	Taps           []string `json:"taps"`
	Rules          []string `json:"rules"`
	Table          *string  `json:"table,omitempty"`
}

// StopReport is what a stop did and how long each phase took.
type StopReport struct {
	Reason           StopReason      `json:"reason"`
	Signalled        uint64          `json:"signalled"`
	SignalMs         float64         `json:"signal_ms"`
	GraceMs          float64         `json:"grace_ms"`
	KilledAfterGrace uint64          `json:"killed_after_grace"`
	KillMs           float64         `json:"kill_ms"`
	RemoveMs         float64         `json:"remove_ms"`
	RmdirFallback    bool            `json:"rmdir_fallback"`
	PidsFrozen       bool            `json:"pids_frozen"`
	TotalMs          float64         `json:"total_ms"`
	Stuck            []StuckProcess  `json:"stuck"`
	Killed           []KilledProcess `json:"killed,omitempty"`
	CPUUsageUsec     *uint64         `json:"cpu_usage_usec,omitempty"`
	MemoryPeak       *uint64         `json:"memory_peak,omitempty"`
	OOMKills         *uint64         `json:"oom_kills,omitempty"`
	OOMGroupKills    *uint64         `json:"oom_group_kills,omitempty"`
	Error            *string         `json:"error,omitempty"`
}

// StuckProcess is a process that survived the kill.
type StuckProcess struct {
	Pid   int32   `json:"pid"`
	Comm  *string `json:"comm,omitempty"`
	State *string `json:"state,omitempty"`
	Wchan *string `json:"wchan,omitempty"`
}

// KilledProcess is a process killed after the grace period.
type KilledProcess struct {
	Pid  int32   `json:"pid"`
	Comm *string `json:"comm,omitempty"`
}

// SandboxStats is a sandbox's usage; nil: the controller is unavailable.
type SandboxStats struct {
	Processes        uint64          `json:"processes"`
	Pressure         SandboxPressure `json:"pressure"`
	CPUNrThrottled   *uint64         `json:"cpu_nr_throttled,omitempty"`
	CPUSystemUsec    *uint64         `json:"cpu_system_usec,omitempty"`
	CPUUsageUsec     *uint64         `json:"cpu_usage_usec,omitempty"`
	CPUUserUsec      *uint64         `json:"cpu_user_usec,omitempty"`
	IOReadBytes      *uint64         `json:"io_read_bytes,omitempty"`
	IOWriteBytes     *uint64         `json:"io_write_bytes,omitempty"`
	MemoryCurrent    *uint64         `json:"memory_current,omitempty"`
	MemoryHighEvents *uint64         `json:"memory_high_events,omitempty"`
	MemoryMaxEvents  *uint64         `json:"memory_max_events,omitempty"`
	MemoryOOMKill    *uint64         `json:"memory_oom_kill,omitempty"`
	MemoryPeak       *uint64         `json:"memory_peak,omitempty"`
	PidsCurrent      *uint64         `json:"pids_current,omitempty"`
}

// SandboxPressure is the PSI of a sandbox's cgroup; nil: not available.
type SandboxPressure struct {
	CPU    *PsiStats `json:"cpu,omitempty"`
	IO     *PsiStats `json:"io,omitempty"`
	Memory *PsiStats `json:"memory,omitempty"`
}

// PsiStats is one resource's pressure.
type PsiStats struct {
	Some PsiLine  `json:"some"`
	Full *PsiLine `json:"full,omitempty"`
}

// PsiLine is one line of a pressure file.
type PsiLine struct {
	Avg10     float64 `json:"avg10"`
	Avg60     float64 `json:"avg60"`
	Avg300    float64 `json:"avg300"`
	TotalUsec uint64  `json:"total_usec"`
}

// ---- events --------------------------------------------------------------------------

// Event is one event of one lifecycle (schema Event: the fields of every kind, EventKind,
// are here; those of other kinds than Type are zero).
type Event struct {
	Type      EventType `json:"type"`
	ID        string    `json:"id"`
	Lifecycle string    `json:"lifecycle"`
	// AtMs is when it happened.
	AtMs uint64 `json:"at_ms"`

	Pid           *int32         `json:"pid,omitempty"`             // started, adopted
	Jail          *JailStatus    `json:"jail,omitempty"`            // started
	State         State          `json:"state,omitempty"`           // adopted
	Error         string         `json:"error,omitempty"`           // start_failed, failed
	Status        *MainExit      `json:"status,omitempty"`          // main_exited
	Reason        StopReason     `json:"reason,omitempty"`          // stopping
	Count         uint64         `json:"count,omitempty"`           // leaked_processes_killed
	Report        *StopReport    `json:"report,omitempty"`          // stopped
	Stuck         []StuckProcess `json:"stuck,omitempty"`           // quarantined
	OOMKills      uint64         `json:"oom_kills,omitempty"`       // oom
	OOMGroupKills uint64         `json:"oom_group_kills,omitempty"` // oom
	Limits        *Limits        `json:"limits,omitempty"`          // limits_updated
	DeadlineAtMs  uint64         `json:"deadline_at_ms,omitempty"`  // deadline_set, deadline
	Attempt       uint32         `json:"attempt,omitempty"`         // restarting
	RestartAtMs   uint64         `json:"restart_at_ms,omitempty"`   // restarting: when the restart is due
}

// SequencedEvent is an event as the stream serves it, with its seq.
type SequencedEvent struct {
	Event
	Seq uint64 `json:"seq"`
}

// Lagged is the data of a `lagged` stream item.
type Lagged struct {
	Missed uint64 `json:"missed"`
}

// EventStreamItem is one server-sent event of GET /v1/events: Event, ID and Data as
// sent; Sequenced (an event) or Lagged decoded from Data.
type EventStreamItem struct {
	Event string          `json:"event"`
	ID    string          `json:"id,omitempty"`
	Data  json.RawMessage `json:"data"`

	Sequenced *SequencedEvent `json:"-"`
	Lagged    *Lagged         `json:"-"`
}

// EventsGone is the body of a 410 from GET /v1/events (see APIError.OldestSeq/LastSeq).
type EventsGone struct {
	Error     string  `json:"error"`
	OldestSeq *uint64 `json:"oldest_seq,omitempty"`
	LastSeq   uint64  `json:"last_seq"`
}

// ---- node ----------------------------------------------------------------------------

// NodeInfo is what the node is and holds.
type NodeInfo struct {
	Version         string        `json:"version"`
	GitCommit       *string       `json:"git_commit,omitempty"`
	Kernel          string        `json:"kernel"`
	Cgroup          NodeCgroup    `json:"cgroup"`
	Capacity        NodeResources `json:"capacity"`
	Reserved        NodeResources `json:"reserved"`
	Allocatable     NodeResources `json:"allocatable"`
	Memory          NodeMemory    `json:"memory"`
	Sandboxes       SandboxCounts `json:"sandboxes"`
	Draining        bool          `json:"draining"`
	DrainingSinceMs *uint64       `json:"draining_since_ms,omitempty"`
}

// NodeCgroup is the node's cgroup setup.
type NodeCgroup struct {
	Mode        string   `json:"mode"`
	Mount       string   `json:"mount"`
	Root        string   `json:"root"`
	Controllers []string `json:"controllers"`
}

// NodeResources is CPUs and memory.
type NodeResources struct {
	CPUs        float64 `json:"cpus"`
	MemoryBytes uint64  `json:"memory_bytes"`
}

// NodeMemory is memory admission's state.
type NodeMemory struct {
	CommittedBytes      uint64   `json:"committed_bytes"`
	LiveWithoutLimit    uint64   `json:"live_without_limit"`
	RequireLimit        bool     `json:"require_limit"`
	OvercommitRatio     *float64 `json:"overcommit_ratio,omitempty"`
	AdmissionLimitBytes *uint64  `json:"admission_limit_bytes,omitempty"`
}

// SandboxCounts is the node's lifecycles by state.
type SandboxCounts struct {
	Creating    uint64 `json:"creating"`
	Running     uint64 `json:"running"`
	Paused      uint64 `json:"paused"`
	Stopping    uint64 `json:"stopping"`
	Stopped     uint64 `json:"stopped"`
	Failed      uint64 `json:"failed"`
	Quarantined uint64 `json:"quarantined"`
	Live        uint64 `json:"live"`
}

// DrainRequest is the optional body of POST /v1/node/drain.
type DrainRequest struct {
	// Stop stops every live sandbox too (reason `drain`).
	Stop bool `json:"stop,omitempty"`
	// Grace replaces the sandboxes' grace periods.
	Grace *Duration `json:"grace,omitempty"`
}

// DrainReport is the answer of a drain.
type DrainReport struct {
	Draining        bool           `json:"draining"`
	WasDraining     bool           `json:"was_draining"`
	CreatesInFlight uint64         `json:"creates_in_flight"`
	Stopped         uint64         `json:"stopped"`
	Failed          []DrainFailure `json:"failed"`
	Live            uint64         `json:"live"`
}

// DrainFailure is a sandbox whose stop failed in a drain.
type DrainFailure struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// UndrainReport is the answer of an undrain.
type UndrainReport struct {
	Draining    bool `json:"draining"`
	WasDraining bool `json:"was_draining"`
}

// StatusBody is the answer of /healthz and /readyz.
type StatusBody struct {
	Status string `json:"status"`
}

// ErrorBody is every error's body.
type ErrorBody struct {
	Error string `json:"error"`
}

// ---- helpers -------------------------------------------------------------------------

// Ptr returns a pointer to v (for the optional fields).
func Ptr[T any](v T) *T { return &v }

func marshalWithExtra(v interface{}, extra map[string]json.RawMessage) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(extra) == 0 {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, x := range extra {
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("paddock: Extra member %q is also a field", k)
		}
		m[k] = x
	}
	return json.Marshal(m)
}

func unmarshalWithExtra(b []byte, v interface{}) (map[string]json.RawMessage, error) {
	if err := json.Unmarshal(b, v); err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for name := range jsonNames(v) {
		delete(m, name)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}
