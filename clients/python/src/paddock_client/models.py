"""The API's types, named as in `crates/paddock/openapi.json` (`components.schemas`).

Requests (what the client sends) are `TypedDict`s: write them as plain dicts, and a type
checker checks their keys. Answers (what the daemon sends) are frozen dataclasses, made by
`from_json`; a field the document does not require is optional here too (`None` when
absent). Fields the daemon sends that this version does not know are ignored, so an older
client keeps working against a newer daemon; `tests/test_drift.py` fails when the document
and these types disagree.
"""


import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Literal, Optional, Type, TypeVar, Union

if sys.version_info >= (3, 11):
    from typing import Required, TypedDict
else:  # 3.10: its typing.TypedDict does not know Required
    from typing_extensions import Required, TypedDict

# --- scalars and enums -------------------------------------------------------------------

SandboxId = str
"""1 to 128 bytes; no `/` or control character, not `.` or `..` (see the document)."""
LifecycleId = str
"""The ID of one lifecycle (one start) of a sandbox."""
Duration = str
"""`10s`, `500ms`, `2m`, `1.5h`, `0`: at most 365 days."""
LabelSelectors = List[str]
"""`key=value` or `key`, at most 16."""
IdOrName = Union[int, str]

State = Literal["creating", "running", "stopping", "stopped", "failed", "quarantined"]
StopReason = Literal[
    "requested", "killed", "main_exited", "shutdown", "recovered", "deadline", "oom", "drain"
]
CgroupFsSpec = Literal["unchanged", "readonly", "hidden"]
LandlockModeSpec = Literal["auto", "off", "required"]
OnMainExit = Literal["stop", "keep_running"]
Protocol = Literal["tcp", "udp"]
RestartMode = Literal["never", "on_failure", "always"]
SeccompBuiltin = Literal["default", "unconfined"]
UnlimitedWord = Literal["unlimited", "infinity"]
LimitValue = Union[int, UnlimitedWord]
Namespace = Literal["pid", "mount", "ipc", "uts", "cgroup", "user"]

# --- requests (TypedDicts) ---------------------------------------------------------------


class IoDeviceLimit(TypedDict, total=False):
    device: Required[str]
    read_bps: Optional[int]
    read_iops: Optional[int]
    write_bps: Optional[int]
    write_iops: Optional[int]


class Limits(TypedDict, total=False):
    cpu_weight: Optional[int]
    cpus: Optional[float]
    cpuset_cpus: Optional[str]
    cpuset_mems: Optional[str]
    hugetlb_max: Dict[str, int]
    io_max: List[IoDeviceLimit]
    io_weight: Optional[int]
    max_depth: Optional[int]
    max_descendants: Optional[int]
    memory_high: Optional[int]
    memory_low: Optional[int]
    memory_max: Optional[int]
    memory_min: Optional[int]
    memory_swap_max: Optional[int]
    oom_group: Optional[bool]
    pids_max: Optional[int]


class LimitsUpdate(TypedDict, total=False):
    """A field given replaces that limit, `None` lifts it, a field left out stays."""

    cpu_weight: Optional[int]
    cpus: Optional[float]
    cpuset_cpus: Optional[str]
    cpuset_mems: Optional[str]
    hugetlb_max: Optional[Dict[str, int]]
    io_max: Optional[List[IoDeviceLimit]]
    io_weight: Optional[int]
    max_depth: Optional[int]
    max_descendants: Optional[int]
    memory_high: Optional[int]
    memory_low: Optional[int]
    memory_max: Optional[int]
    memory_min: Optional[int]
    memory_swap_max: Optional[int]
    oom_group: Optional[bool]
    pids_max: Optional[int]


class UpdateRequest(TypedDict):
    limits: LimitsUpdate


class StopPolicy(TypedDict, total=False):
    grace_period_ms: int
    kill_timeout_ms: int
    signal: int


class FileTarget(TypedDict):
    """`{"file": PATH}`: a regular file opened by the daemon (as root)."""

    file: str


class StdioSpec(TypedDict, total=False):
    stdin: Union[Literal["null"], FileTarget]
    stdout: Union[Literal["null", "log"], FileTarget]
    stderr: Union[Literal["null", "log"], FileTarget]


class RestartPolicy(TypedDict, total=False):
    initial_backoff_ms: int
    max_backoff_ms: int
    max_restarts: Optional[int]
    mode: RestartMode


class PublishSpec(TypedDict, total=False):
    host_port: Required[int]
    sandbox_port: Required[int]
    protocol: Protocol


class TapSpec(TypedDict, total=False):
    name: Required[str]
    address: Optional[str]
    gid: Optional[int]
    uid: Optional[int]
    multi_queue: bool
    vnet_hdr: bool


class VethSpec(TypedDict, total=False):
    isolate: bool
    nat: bool
    publish: List[PublishSpec]
    taps: List[TapSpec]


class NamedNetwork(TypedDict):
    named: str


class VethNetwork(TypedDict):
    veth: VethSpec


Network = Union[Literal["host", "isolated"], NamedNetwork, VethNetwork]


class BindMount(TypedDict, total=False):
    type: Required[Literal["bind"]]
    source: Required[str]
    target: Required[str]
    nodev: bool
    noexec: bool
    nosuid: bool
    readonly: bool


class TmpfsMount(TypedDict, total=False):
    type: Required[Literal["tmpfs"]]
    target: Required[str]
    mode: int
    size: Optional[int]


class ProcMount(TypedDict):
    type: Literal["proc"]
    target: str


class SysfsMount(TypedDict):
    type: Literal["sysfs"]
    target: str


class MqueueMount(TypedDict):
    type: Literal["mqueue"]
    target: str


MountSpec = Union[BindMount, TmpfsMount, ProcMount, SysfsMount, MqueueMount]


class FilesystemSpec(TypedDict, total=False):
    cgroupfs: Optional[CgroupFsSpec]
    devices: List[str]
    masked_paths: Optional[List[str]]
    minimal_dev: Optional[bool]
    mounts: List[MountSpec]
    readonly: bool
    rootfs: Optional[str]


class LandlockSpec(TypedDict, total=False):
    mode: LandlockModeSpec
    tcp_bind: Optional[List[int]]
    tcp_connect: Optional[List[int]]


class PrivilegesSpec(TypedDict, total=False):
    cap_add: List[str]
    cap_drop: List[str]
    no_new_privs: Optional[bool]


class RlimitRange(TypedDict, total=False):
    soft: Required[LimitValue]
    hard: Optional[LimitValue]


class NamedRlimit(TypedDict, total=False):
    name: Required[str]
    soft: Required[LimitValue]
    hard: Optional[LimitValue]


RlimitsSpec = Union[Dict[str, RlimitRange], List[NamedRlimit]]


class SeccompRule(TypedDict, total=False):
    """One rule of an OCI profile (`args`, `errnoRet` and the rest of the format too)."""

    action: Required[str]
    names: Required[List[str]]


class SeccompProfile(TypedDict, total=False):
    """An OCI `linux.seccomp` object (other keys of the format are allowed too)."""

    defaultAction: Required[str]
    syscalls: List[SeccompRule]


SeccompSpec = Union[SeccompBuiltin, SeccompProfile]


class IdMapSpec(TypedDict):
    count: int
    inside: int
    outside: int


class UserNsSpec(TypedDict):
    gid_map: List[IdMapSpec]
    uid_map: List[IdMapSpec]


class UserSpec(TypedDict, total=False):
    dynamic: bool
    gid: Optional[IdOrName]
    groups: List[IdOrName]
    uid: Optional[IdOrName]


class JailSpec(TypedDict, total=False):
    filesystem: Optional[FilesystemSpec]
    hostname: Optional[str]
    init: Optional[bool]
    landlock: LandlockSpec
    namespaces: List[Namespace]
    privileges: PrivilegesSpec
    rlimits: RlimitsSpec
    seccomp: SeccompSpec
    user: Optional[UserSpec]
    user_ns: Optional[UserNsSpec]


class SandboxSpec(TypedDict, total=False):
    """Everything needed to start a sandbox: `id` and `command` are required."""

    id: Required[SandboxId]
    command: Required[str]
    args: List[str]
    clear_env: bool
    cwd: Optional[str]
    deadline_ms: Optional[int]
    env: Dict[str, str]
    jail: Optional[JailSpec]
    labels: Dict[str, str]
    limits: Limits
    network: Network
    on_main_exit: OnMainExit
    restart: RestartPolicy
    stdio: StdioSpec
    stop: StopPolicy


class CreateRequest(SandboxSpec, total=False):
    """A SandboxSpec, and `"start": True` if you like (the daemon starts what it creates)."""

    start: Literal[True]


class DrainRequest(TypedDict, total=False):
    grace: Optional[Duration]
    stop: bool


# --- answers (dataclasses) -------------------------------------------------------------


def _convert(tp: Any, value: Any) -> Any:
    """`value` (decoded JSON) as type `tp`: dataclasses built, the rest passed through."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _convert(args[0], value)
        for arg in args:
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _convert(arg, value)
        return value
    if origin in (list, List):
        (item,) = typing.get_args(tp)
        return [_convert(item, v) for v in value]
    if isinstance(tp, type) and issubclass(tp, _Model):
        return tp.from_json(value)
    return value


_M = TypeVar("_M", bound="_Model")


@dataclass(frozen=True)
class _Model:
    @classmethod
    def from_json(cls: Type[_M], obj: Dict[str, Any]) -> _M:
        """Builds the answer from its decoded JSON; unknown keys are ignored."""
        if not isinstance(obj, dict):
            raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(obj).__name__}")
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in obj:
                kwargs[f.name] = _convert(hints[f.name], obj[f.name])
        return cls(**kwargs)


_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls: type) -> Dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = _HINTS[cls] = typing.get_type_hints(cls)
    return h


@dataclass(frozen=True)
class ErrorBody(_Model):
    error: str


@dataclass(frozen=True)
class StatusBody(_Model):
    status: str


@dataclass(frozen=True)
class MainExit(_Model):
    core_dumped: bool
    code: Optional[int] = None
    signal: Optional[int] = None


@dataclass(frozen=True)
class KilledProcess(_Model):
    pid: int
    comm: Optional[str] = None


@dataclass(frozen=True)
class StuckProcess(_Model):
    pid: int
    comm: Optional[str] = None
    state: Optional[str] = None
    wchan: Optional[str] = None


@dataclass(frozen=True)
class StopReport(_Model):
    reason: StopReason
    signalled: int
    signal_ms: float
    grace_ms: float
    killed_after_grace: int
    kill_ms: float
    remove_ms: float
    rmdir_fallback: bool
    pids_frozen: bool
    total_ms: float
    stuck: List[StuckProcess]
    killed: Optional[List[KilledProcess]] = None
    cpu_usage_usec: Optional[int] = None
    memory_peak: Optional[int] = None
    oom_kills: Optional[int] = None
    oom_group_kills: Optional[int] = None
    error: Optional[str] = None


@dataclass(frozen=True)
class JailStatus(_Model):
    uid: int
    gid: int
    groups: List[int]
    capabilities: List[str]
    landlock_mode: LandlockModeSpec
    dynamic_uid: Optional[int] = None
    landlock_abi: Optional[int] = None


@dataclass(frozen=True)
class NetStatus(_Model):
    netns: str
    owner: str
    host_ifname: str
    sandbox_ifname: str
    host_address: str
    sandbox_address: str
    subnet: str
    rules: List[str]
    taps: List[str]
    table: Optional[str] = None


@dataclass(frozen=True)
class PendingRestart(_Model):
    at_ms: int
    attempt: int
    since_reset: int


@dataclass(frozen=True)
class SandboxInfo(_Model):
    id: SandboxId
    lifecycle: LifecycleId
    state: State
    paused: bool
    current: bool
    cgroup_path: str
    created_at_ms: int
    spec: SandboxSpec
    stuck: List[StuckProcess]
    pid: Optional[int] = None
    main_exit: Optional[MainExit] = None
    stop_report: Optional[StopReport] = None
    error: Optional[str] = None
    deadline_at_ms: Optional[int] = None
    jail: Optional[JailStatus] = None
    network: Optional[NetStatus] = None
    restart_count: Optional[int] = None
    restart_pending: Optional[PendingRestart] = None


@dataclass(frozen=True)
class PsiLine(_Model):
    avg10: float
    avg60: float
    avg300: float
    total_usec: int


@dataclass(frozen=True)
class PsiStats(_Model):
    some: PsiLine
    full: Optional[PsiLine] = None


@dataclass(frozen=True)
class SandboxPressure(_Model):
    cpu: Optional[PsiStats] = None
    memory: Optional[PsiStats] = None
    io: Optional[PsiStats] = None


@dataclass(frozen=True)
class SandboxStats(_Model):
    """`None` means the controller is not available, not zero."""

    processes: int
    cpu_usage_usec: Optional[int] = None
    cpu_user_usec: Optional[int] = None
    cpu_system_usec: Optional[int] = None
    cpu_nr_throttled: Optional[int] = None
    memory_current: Optional[int] = None
    memory_peak: Optional[int] = None
    memory_high_events: Optional[int] = None
    memory_max_events: Optional[int] = None
    memory_oom_kill: Optional[int] = None
    pids_current: Optional[int] = None
    io_read_bytes: Optional[int] = None
    io_write_bytes: Optional[int] = None
    pressure: Optional[SandboxPressure] = None


@dataclass(frozen=True)
class NodeResources(_Model):
    cpus: float
    memory_bytes: int


@dataclass(frozen=True)
class NodeCgroup(_Model):
    mount: str
    root: str
    mode: str
    controllers: List[str]


@dataclass(frozen=True)
class NodeMemory(_Model):
    committed_bytes: int
    live_without_limit: int
    require_limit: bool
    admission_limit_bytes: Optional[int] = None
    overcommit_ratio: Optional[float] = None


@dataclass(frozen=True)
class SandboxCounts(_Model):
    creating: int
    running: int
    stopping: int
    stopped: int
    failed: int
    quarantined: int
    paused: int
    live: int


@dataclass(frozen=True)
class NodeInfo(_Model):
    version: str
    kernel: str
    cgroup: NodeCgroup
    capacity: NodeResources
    reserved: NodeResources
    allocatable: NodeResources
    memory: NodeMemory
    sandboxes: SandboxCounts
    draining: bool
    draining_since_ms: Optional[int] = None
    git_commit: Optional[str] = None


@dataclass(frozen=True)
class DrainFailure(_Model):
    id: SandboxId
    error: str


@dataclass(frozen=True)
class DrainReport(_Model):
    draining: bool
    was_draining: bool
    creates_in_flight: int
    stopped: int
    failed: List[DrainFailure]
    live: int


@dataclass(frozen=True)
class UndrainReport(_Model):
    draining: bool
    was_draining: bool


@dataclass(frozen=True)
class EventsGone(_Model):
    error: str
    last_seq: int
    oldest_seq: Optional[int] = None


@dataclass(frozen=True)
class Lagged(_Model):
    """Not an event: this stream could not deliver `missed` events (the ring dropped them)."""

    missed: int


@dataclass(frozen=True)
class EventStreamItem(_Model):
    """One server-sent event as it came (`event:`, `id:`, `data:`); see `parse_event`."""

    event: str
    data: str
    id: Optional[str] = None


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event(_Model):
    """One event of one lifecycle of one sandbox, with its `seq` (a `SequencedEvent`).

    Each `type` has its own subclass (`Started`, `Stopped`, ...) with that type's fields;
    `type` is the wire name (`"started"`). An event type this client does not know comes
    as `Event` itself (with `type` set), so a newer daemon does not break the stream.
    """

    seq: int
    id: SandboxId
    lifecycle: LifecycleId
    at_ms: int
    type: str

    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Started(Event):
    pid: int = 0
    jail: Optional[JailStatus] = None
    TYPE: ClassVar[str] = "started"


@dataclass(frozen=True)
class Adopted(Event):
    state: State = "running"
    pid: Optional[int] = None
    TYPE: ClassVar[str] = "adopted"


@dataclass(frozen=True)
class StartFailed(Event):
    error: str = ""
    TYPE: ClassVar[str] = "start_failed"


@dataclass(frozen=True)
class MainExited(Event):
    status: Optional[MainExit] = None
    TYPE: ClassVar[str] = "main_exited"


@dataclass(frozen=True)
class Stopping(Event):
    reason: StopReason = "requested"
    TYPE: ClassVar[str] = "stopping"


@dataclass(frozen=True)
class LeakedProcessesKilled(Event):
    count: int = 0
    TYPE: ClassVar[str] = "leaked_processes_killed"


@dataclass(frozen=True)
class Stopped(Event):
    report: Optional[StopReport] = None
    TYPE: ClassVar[str] = "stopped"


@dataclass(frozen=True)
class Quarantined(Event):
    stuck: List[StuckProcess] = field(default_factory=list)
    TYPE: ClassVar[str] = "quarantined"


@dataclass(frozen=True)
class Failed(Event):
    error: str = ""
    TYPE: ClassVar[str] = "failed"


@dataclass(frozen=True)
class Oom(Event):
    oom_kills: int = 0
    oom_group_kills: int = 0
    TYPE: ClassVar[str] = "oom"


@dataclass(frozen=True)
class LimitsUpdated(Event):
    limits: Limits = field(default_factory=lambda: Limits())
    TYPE: ClassVar[str] = "limits_updated"


@dataclass(frozen=True)
class Paused(Event):
    TYPE: ClassVar[str] = "paused"


@dataclass(frozen=True)
class Resumed(Event):
    TYPE: ClassVar[str] = "resumed"


@dataclass(frozen=True)
class DeadlineSet(Event):
    deadline_at_ms: int = 0
    TYPE: ClassVar[str] = "deadline_set"


@dataclass(frozen=True)
class Restarting(Event):
    """The ID starts again, as a new lifecycle, at `restart_at_ms` (`at_ms`: when the
    restart was decided)."""

    attempt: int = 0
    restart_at_ms: int = 0
    TYPE: ClassVar[str] = "restarting"


@dataclass(frozen=True)
class RestartCancelled(Event):
    TYPE: ClassVar[str] = "restart_cancelled"


@dataclass(frozen=True)
class Deadline(Event):
    deadline_at_ms: int = 0
    TYPE: ClassVar[str] = "deadline"


EVENT_TYPES: Dict[str, Type[Event]] = {
    c.TYPE: c
    for c in (
        Started, Adopted, StartFailed, MainExited, Stopping, LeakedProcessesKilled, Stopped,
        Quarantined, Failed, Oom, LimitsUpdated, Paused, Resumed, DeadlineSet, Restarting,
        RestartCancelled, Deadline,
    )
}
"""Event class by its wire `type`."""

EventKind = Union[
    Started, Adopted, StartFailed, MainExited, Stopping, LeakedProcessesKilled, Stopped,
    Quarantined, Failed, Oom, LimitsUpdated, Paused, Resumed, DeadlineSet, Restarting,
    RestartCancelled, Deadline,
]
SequencedEvent = Event
"""What the stream carries: an `Event` with its `seq` (every `Event` here has one)."""


def parse_event(data: str) -> Union[Event, Lagged]:
    """The `data:` of one server-sent event as an `Event` subclass (or `Lagged`)."""
    import json

    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError(f"event data is not a JSON object: {data[:200]!r}")
    if "seq" not in obj and "missed" in obj:
        return Lagged.from_json(obj)
    return EVENT_TYPES.get(obj.get("type", ""), Event).from_json(obj)
