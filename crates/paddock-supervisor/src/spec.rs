//! What a sandbox is asked to be: [`SandboxSpec`] and its parts.
//!
//! Over 600 lines with its unit tests (about 550 without): every part's validation sits next
//! to its type, so a field and the check that bounds it are read together.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest sandbox ID, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Longest sandbox ID that is not all ASCII, in characters: a quarter of [`MAX_ID_LEN`],
/// so that it fits in [`MAX_ID_LEN`] bytes whatever its characters. (An ID is either all
/// ASCII and at most [`MAX_ID_LEN`] long, or at most this many characters: a rule a JSON
/// schema can state exactly, since `maxLength` counts characters, not bytes.)
pub const MAX_ID_CHARS_NON_ASCII: usize = MAX_ID_LEN / 4;

/// Longest duration accepted anywhere a duration is given: a spec's `grace_period_ms` and
/// `kill_timeout_ms`, [`parse_duration`] (and with it the API's `?timeout=`): 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400 * 365);

/// Largest `max_descendants` and `max_depth`: the kernel parses `cgroup.max.descendants`
/// and `cgroup.max.depth` as a C `int`.
pub const MAX_CGROUP_COUNT_LIMIT: u64 = i32::MAX as u64;

/// Largest `pids_max`: the kernel refuses a `pids.max` above `PID_MAX_LIMIT` (4,194,304 on
/// 64-bit kernels).
pub const MAX_PIDS_LIMIT: u64 = 4 * 1024 * 1024;

/// A validated sandbox ID: a cgroup-safe name (no `/`, no NUL, no control characters, not
/// `.`/`..`, not named like a cgroup interface file) of 1 to 128 bytes: up to 128 ASCII
/// characters, or up to [`MAX_ID_CHARS_NON_ASCII`] characters when one is not ASCII.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct SandboxId(String);

impl<'de> Deserialize<'de> for SandboxId {
    /// Decodes and validates an ID. The error is the bare reason (`sandbox ID: …`), so a
    /// caller that wraps decoding errors as an invalid spec does not say so twice.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SandboxId::new(s).map_err(|e| match e {
            Error::InvalidSpec(why) => serde::de::Error::custom(why),
            other => serde::de::Error::custom(other),
        })
    }
}

impl SandboxId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        if id.len() > MAX_ID_LEN {
            return Err(Error::InvalidSpec(format!(
                "sandbox ID is {} bytes long; at most {MAX_ID_LEN} are allowed",
                id.len()
            )));
        }
        if !id.is_ascii() && id.chars().count() > MAX_ID_CHARS_NON_ASCII {
            return Err(Error::InvalidSpec(format!(
                "sandbox ID has {} characters, not all ASCII; at most {MAX_ID_CHARS_NON_ASCII} are allowed then (at most {MAX_ID_LEN} when all are ASCII)",
                id.chars().count()
            )));
        }
        paddock_cgroup::CgroupName::new(id.clone())
            .map_err(|e| Error::InvalidSpec(format!("sandbox ID: {e}")))?;
        Ok(SandboxId(id))
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SandboxId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        SandboxId::new(s)
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> String {
        id.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Where a standard stream of the main process goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StdioTarget {
    /// The supervisor's own stream.
    Inherit,
    /// `/dev/null`.
    #[default]
    Null,
    /// The sandbox's log file in the supervisor's log directory (`<id>@<lifecycle>.log`;
    /// stdout and stderr share it).
    Log,
    /// A file, created if missing and appended to.
    File(PathBuf),
    /// A pipe whose other end is handed to the caller of `start` (library use only).
    Pipe,
}

/// The three standard streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        description = "The standard streams of the main process. Through the daemon, a spec without `stdio` gets stdin `null` and stdout and stderr `log`; a field left out of a given `stdio` is `null`. `inherit` and `pipe` (library only) are refused"
    )
)]
pub struct StdioSpec {
    /// fd 0.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::stdin_target))]
    pub stdin: StdioTarget,
    /// fd 1.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::output_target))]
    pub stdout: StdioTarget,
    /// fd 2.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::output_target))]
    pub stderr: StdioTarget,
}

impl StdioSpec {
    /// All three inherited from the supervisor (what `paddock run` uses).
    pub fn inherit() -> Self {
        StdioSpec {
            stdin: StdioTarget::Inherit,
            stdout: StdioTarget::Inherit,
            stderr: StdioTarget::Inherit,
        }
    }
}

/// Resource limits. `None` leaves the kernel default (unlimited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        description = "Resource limits; null or absent leaves the kernel default (unlimited). Each needs its controller (memory, cpu, pids, io, cpuset, hugetlb) on the node: a limit whose controller is missing is a 422. See docs/limits.md"
    )
)]
pub struct Limits {
    /// `memory.max` in bytes.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_max))]
    pub memory_max: Option<u64>,
    /// `memory.high` in bytes.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_high))]
    pub memory_high: Option<u64>,
    /// `cpu.max` as a number of CPUs (1.5 = one and a half CPUs).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cpus))]
    pub cpus: Option<f64>,
    /// `cpu.weight`, 1..=10000.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cpu_weight))]
    pub cpu_weight: Option<u64>,
    /// `pids.max`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::pids_max))]
    pub pids_max: Option<u64>,
    /// `cgroup.max.descendants`: child cgroups the payload may create.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::max_descendants))]
    pub max_descendants: Option<u64>,
    /// `cgroup.max.depth`: how deep the payload may nest cgroups.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::max_depth))]
    pub max_depth: Option<u64>,
    /// `memory.low` in bytes: best-effort protection from reclaim (0 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_low))]
    pub memory_low: Option<u64>,
    /// `memory.min` in bytes: hard protection from reclaim (0 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_min))]
    pub memory_min: Option<u64>,
    /// `memory.swap.max` in bytes (0 = no swap).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::memory_swap_max))]
    pub memory_swap_max: Option<u64>,
    /// `memory.oom.group`: absent or true, an OOM kill takes the whole sandbox down (where
    /// the memory controller is available; true insists on it); false kills one process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_group: Option<bool>,
    /// `io.weight`, 1..=10000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::io_weight))]
    pub io_weight: Option<u64>,
    /// `io.max`: bandwidth and IOPS caps per block device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub io_max: Vec<crate::resources::IoDeviceLimit>,
    /// `cpuset.cpus`: the CPUs the payload may run on, as a list (`0-3,6`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cpuset_list))]
    pub cpuset_cpus: Option<String>,
    /// `cpuset.mems`: the memory nodes it may allocate from, as a list (`0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cpuset_list))]
    pub cpuset_mems: Option<String>,
    /// `hugetlb.<size>.max`: bytes of huge pages per page size, by the kernel's name of the
    /// size (`2MB`, `1GB`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::hugetlb_max))]
    pub hugetlb_max: BTreeMap<String, u64>,
}

impl Limits {
    /// The controllers these limits need.
    pub fn controllers(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.memory_max.is_some() || self.memory_high.is_some() {
            v.push("memory");
        }
        if self.cpus.is_some() || self.cpu_weight.is_some() {
            v.push("cpu");
        }
        if self.pids_max.is_some() {
            v.push("pids");
        }
        crate::resources::more_controllers(self, &mut v);
        v
    }
}

/// The network the main process starts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Network {
    /// The supervisor's (the host's) network namespace.
    #[default]
    Host,
    /// A new network namespace with only a loopback device, which is up (`127.0.0.1` works).
    Isolated,
    /// The named network namespace `/run/netns/<name>` (as made by `ip netns add`).
    Named(String),
    /// A network of the sandbox's own that the supervisor makes and removes: see
    /// [`crate::VethSpec`].
    Veth(crate::VethSpec),
}

/// What happens when the main process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OnMainExit {
    /// Stop the rest of the tree exactly as a stop request would (default).
    #[default]
    Stop,
    /// Keep the sandbox (and whatever else runs in it) until it is stopped.
    KeepRunning,
}

/// How a sandbox is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StopPolicy {
    /// The signal sent to every process first (default SIGTERM = 15).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::stop_signal))]
    pub signal: i32,
    /// How long to wait for the tree to exit on its own, milliseconds (default 10 000).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::grace_period_ms))]
    pub grace_period_ms: u64,
    /// How long the kill may take before the sandbox is quarantined, milliseconds
    /// (default 5 000).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kill_timeout_ms))]
    pub kill_timeout_ms: u64,
}

impl Default for StopPolicy {
    fn default() -> Self {
        StopPolicy {
            signal: libc::SIGTERM,
            grace_period_ms: 10_000,
            kill_timeout_ms: 5_000,
        }
    }
}

impl StopPolicy {
    /// The grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_period_ms)
    }

    /// The kill deadline.
    pub fn kill_timeout(&self) -> Duration {
        Duration::from_millis(self.kill_timeout_ms)
    }
}

/// Everything needed to start a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(example = crate::schema::spec_example)
)]
pub struct SandboxSpec {
    /// The sandbox ID.
    pub id: SandboxId,
    /// The program (a path, or a name looked up in `PATH`).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::command))]
    pub command: String,
    /// Arguments after `argv[0]`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::args))]
    pub args: Vec<String>,
    /// Environment variables, added to the supervisor's unless `clear_env`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::env))]
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment.
    #[serde(default)]
    pub clear_env: bool,
    /// Working directory.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cwd))]
    pub cwd: Option<PathBuf>,
    /// Standard streams.
    #[serde(default)]
    pub stdio: StdioSpec,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Network namespace.
    #[serde(default)]
    pub network: Network,
    /// Stop policy.
    #[serde(default)]
    pub stop: StopPolicy,
    /// What the main process's exit does.
    #[serde(default)]
    pub on_main_exit: OnMainExit,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The jail: its own user, privileges, rlimits, namespaces, filesystem, seccomp filter
    /// and Landlock rules (see `docs/jail.md`). Absent: the payload runs as the supervisor
    /// does (root, the host's filesystem and namespaces but the network's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<crate::jail::JailSpec>,
    /// A time to live: the sandbox is stopped gracefully, by its own stop policy and with
    /// reason `deadline`, this many milliseconds after it was created (1 to 365 days'
    /// worth). The deadline is kept as an absolute time in the sandbox's record, so it holds
    /// across a restart of the supervisor; [`crate::Supervisor::extend_deadline`] moves it
    /// (and gives a deadline to a sandbox started without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::deadline_ms))]
    pub deadline_ms: Option<u64>,
    /// Whether the sandbox is started again, as a new lifecycle under the same ID, when its
    /// main process exits (see [`RestartPolicy`]). Default: never.
    #[serde(default, skip_serializing_if = "RestartPolicy::is_never")]
    pub restart: RestartPolicy,
}

/// When a sandbox is restarted (systemd's `Restart=`, Docker's `--restart`, Nomad's
/// `restart` block): each restart is a new lifecycle under the same ID, started after a
/// backoff that doubles from `initial_backoff_ms` up to `max_backoff_ms` (back to the
/// initial one after a lifecycle that ran 10 s or more), at most `max_restarts` times.
/// Only a lifecycle that ended because its main process exited (and was stopped cleanly:
/// not quarantined) is restarted; a stop or kill request, a deadline or a shutdown ends the
/// restarts, also one waiting for its backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestartPolicy {
    /// `never` (default), `on_failure` (the main process exited with a non-zero code or was
    /// killed by a signal) or `always`.
    pub mode: RestartMode,
    /// At most this many restarts of the ID (Docker's `on-failure:N`); absent: no limit.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::max_restarts))]
    pub max_restarts: Option<u32>,
    /// The first backoff, milliseconds (default 100).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::initial_backoff_ms))]
    pub initial_backoff_ms: u64,
    /// The longest backoff, milliseconds (default 30 000); at least `initial_backoff_ms`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::max_backoff_ms))]
    pub max_backoff_ms: u64,
}

/// [`RestartPolicy::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RestartMode {
    /// Never restart (default).
    #[default]
    Never,
    /// When the main process exited with a non-zero code or was killed by a signal.
    OnFailure,
    /// Whenever the main process exited.
    Always,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            mode: RestartMode::Never,
            max_restarts: None,
            initial_backoff_ms: 100,
            max_backoff_ms: 30_000,
        }
    }
}

impl RestartPolicy {
    /// Whether it never restarts.
    pub fn is_never(&self) -> bool {
        self.mode == RestartMode::Never
    }

    /// Whether a main process that ended as `exit` asks for a restart (the count and the
    /// reason of the stop are checked by the supervisor).
    pub fn wants(&self, exit: Option<&crate::MainExit>) -> bool {
        match self.mode {
            RestartMode::Never => false,
            RestartMode::Always => true,
            RestartMode::OnFailure => exit.is_none_or(|e| e.code != Some(0)),
        }
    }

    /// The backoff before restart number `attempt` (1 for the first): `initial_backoff_ms`
    /// doubled for each earlier attempt since the last reset, at most `max_backoff_ms`.
    pub fn backoff_ms(&self, attempt_since_reset: u32) -> u64 {
        let shift = attempt_since_reset.saturating_sub(1).min(40);
        self.initial_backoff_ms
            .saturating_mul(1u64 << shift)
            .min(self.max_backoff_ms)
    }
}

impl SandboxSpec {
    /// A spec with defaults for everything but the ID and the command line.
    pub fn new(
        id: SandboxId,
        command: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        SandboxSpec {
            id,
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            clear_env: false,
            cwd: None,
            stdio: StdioSpec::default(),
            limits: Limits::default(),
            network: Network::Host,
            stop: StopPolicy::default(),
            on_main_exit: OnMainExit::Stop,
            labels: BTreeMap::new(),
            jail: None,
            deadline_ms: None,
            restart: RestartPolicy::default(),
        }
    }

    /// Checks everything that can be checked without touching the system. A spec that
    /// passes can still fail to start (a missing program, a missing controller), but one
    /// that fails never changes anything. A field whose own value is wrong — what the
    /// OpenAPI document's schema of it refuses — is [`Error::InvalidSpec`]; fields that are
    /// each valid but do not fit together (in the jail: see
    /// [`crate::JailSpec::check_consistency`]) are [`Error::Inconsistent`]. Every field is
    /// checked on its own before any two are checked together, so a spec with both kinds of
    /// fault is [`Error::InvalidSpec`].
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidSpec(m));
        if self.command.is_empty() {
            return bad("command is empty".into());
        }
        if self.command.contains('\0') || self.args.iter().any(|a| a.contains('\0')) {
            return bad("command and arguments must not contain NUL bytes".into());
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return bad(format!(
                    "environment variable {k:?}: names must be non-empty without '=' or NUL"
                ));
            }
        }
        if !(1..=64).contains(&self.stop.signal) {
            return bad(format!(
                "stop signal {} is not a signal number (1..=64)",
                self.stop.signal
            ));
        }
        if self.stop.kill_timeout_ms == 0 {
            return bad("stop.kill_timeout_ms must be at least 1".into());
        }
        let max_ms = MAX_DURATION.as_millis() as u64;
        for (name, v) in [
            ("grace_period_ms", self.stop.grace_period_ms),
            ("kill_timeout_ms", self.stop.kill_timeout_ms),
        ] {
            if v > max_ms {
                return bad(format!(
                    "stop.{name} = {v}: at most {max_ms} (365 days, the bound of every duration)"
                ));
            }
        }
        if let Some(d) = self.deadline_ms
            && !(1..=max_ms).contains(&d)
        {
            return bad(format!(
                "deadline_ms = {d}: must be from 1 to {max_ms} (365 days, the bound of every duration)"
            ));
        }
        let r = &self.restart;
        for (name, v, lo) in [
            ("initial_backoff_ms", r.initial_backoff_ms, 1),
            ("max_backoff_ms", r.max_backoff_ms, 1),
        ] {
            if !(lo..=max_ms).contains(&v) {
                return bad(format!(
                    "restart.{name} = {v}: must be from {lo} to {max_ms} (365 days)"
                ));
            }
        }
        let l = &self.limits;
        // The same bounds as the cgroup layer (and the kernel), so a spec that validates
        // never fails at start for its CPU quota.
        if let Some(c) = l.cpus
            && (!(paddock_cgroup::CpuMax::MIN_CPUS..=paddock_cgroup::CpuMax::MAX_CPUS).contains(&c)
                || paddock_cgroup::CpuMax::from_cpus(c).is_err())
        {
            return bad(format!(
                "cpus = {c}: must be a number of CPUs from {} to {}",
                paddock_cgroup::CpuMax::MIN_CPUS,
                paddock_cgroup::CpuMax::MAX_CPUS
            ));
        }
        if let Some(w) = l.cpu_weight
            && !(1..=10_000).contains(&w)
        {
            return bad(format!("cpu_weight = {w}: must be in 1..=10000"));
        }
        if l.memory_max == Some(0) || l.memory_high == Some(0) {
            return bad("memory limits must be above 0 bytes".into());
        }
        for (name, v) in [
            ("max_descendants", l.max_descendants),
            ("max_depth", l.max_depth),
        ] {
            if let Some(v) = v
                && v > MAX_CGROUP_COUNT_LIMIT
            {
                return bad(format!(
                    "limits.{name} = {v}: the kernel accepts at most {MAX_CGROUP_COUNT_LIMIT}"
                ));
            }
        }
        if let Some(p) = l.pids_max
            && p > MAX_PIDS_LIMIT
        {
            return bad(format!(
                "limits.pids_max = {p}: the kernel accepts at most {MAX_PIDS_LIMIT}"
            ));
        }
        crate::resources::validate(l).map_err(Error::InvalidSpec)?;
        if let Some(cwd) = &self.cwd {
            let b = cwd.as_os_str().as_encoded_bytes();
            if b.is_empty() || b.contains(&0) {
                return bad(format!(
                    "cwd {cwd:?}: must be a path, not empty and without NUL bytes"
                ));
            }
        }
        for (name, t) in [
            ("stdio.stdin", &self.stdio.stdin),
            ("stdio.stdout", &self.stdio.stdout),
            ("stdio.stderr", &self.stdio.stderr),
        ] {
            if let StdioTarget::File(p) = t {
                let b = p.as_os_str().as_encoded_bytes();
                if b.is_empty() || b.contains(&0) {
                    return bad(format!(
                        "{name}: file {p:?}: must be a path, not empty and without NUL bytes"
                    ));
                }
            }
        }
        if let Network::Named(n) = &self.network
            && (n.is_empty() || n.contains('/') || n == "." || n == ".." || n.contains('\0'))
        {
            return bad(format!("network namespace name {n:?} is not a plain name"));
        }
        if let Network::Veth(v) = &self.network {
            v.validate_fields().map_err(Error::InvalidSpec)?;
            v.check_consistency().map_err(Error::Inconsistent)?;
        }
        if let Some(j) = &self.jail {
            j.validate_fields().map_err(Error::InvalidSpec)?;
        }
        if !r.is_never() {
            if r.initial_backoff_ms > r.max_backoff_ms {
                return Err(Error::Inconsistent(format!(
                    "restart.initial_backoff_ms = {} is above restart.max_backoff_ms = {}",
                    r.initial_backoff_ms, r.max_backoff_ms
                )));
            }
            if self.on_main_exit != OnMainExit::Stop {
                return Err(Error::Inconsistent(
                    "restart needs on_main_exit = stop: a sandbox that keeps running after its main process exits is never restarted".into(),
                ));
            }
            if [&self.stdio.stdin, &self.stdio.stdout, &self.stdio.stderr]
                .iter()
                .any(|t| matches!(t, StdioTarget::Pipe))
            {
                return Err(Error::Inconsistent(
                    "restart with a pipe in stdio: a restarted lifecycle's pipes would have no reader; use log, a file or null".into(),
                ));
            }
        }
        crate::resources::check_consistency(&self.limits).map_err(Error::Inconsistent)?;
        if let Some(j) = &self.jail {
            j.check_consistency().map_err(Error::Inconsistent)?;
        }
        Ok(())
    }
}

/// Parses a size such as `512M`, `1.5G`, `4096`, `64k` (binary units: K = 1024) into bytes.
pub fn parse_size(s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let err =
        |why: &str| Error::InvalidSpec(format!("size {s:?}: {why} (examples: 512M, 1.5G, 4096)"));
    if t.is_empty() {
        return Err(err("empty"));
    }
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (t, 1u64),
        Some((i, _)) => {
            // Powers of 1024 whatever the spelling: `K`, `KB`, `KiB` (any case); `B` alone
            // is bytes.
            let m = match t[i..].to_ascii_uppercase().as_str() {
                "B" => 1,
                "K" | "KB" | "KIB" => 1 << 10,
                "M" | "MB" | "MIB" => 1 << 20,
                "G" | "GB" | "GIB" => 1 << 30,
                "T" | "TB" | "TIB" => 1 << 40,
                _ => return Err(err("unknown unit (B, K, M, G, T, optionally with B or iB)")),
            };
            (&t[..i], m)
        }
    };
    let num = num.trim();
    if num.is_empty() || num.starts_with('-') || num.starts_with('+') {
        return Err(err("not a positive number"));
    }
    // Whole numbers exactly (no rounding through f64 above 2^53).
    if num.bytes().all(|b| b.is_ascii_digit()) {
        return match num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
            Some(0) => Err(err("out of range")),
            Some(b) if b <= u64::MAX / 2 => Ok(b),
            _ => Err(err("out of range")),
        };
    }
    let v: f64 = num.parse().map_err(|_| err("not a number"))?;
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(err("out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration such as `10s`, `500ms`, `2m`, `1.5s`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let t = s.trim();
    let err =
        |why: &str| Error::InvalidSpec(format!("duration {s:?}: {why} (examples: 10s, 500ms, 2m)"));
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('-') || num.starts_with('+') {
        return Err(err("not a non-negative number"));
    }
    let v: f64 = num.parse().map_err(|_| err("not a number"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(err("unknown unit")),
    };
    if !secs.is_finite() || !(0.0..=MAX_DURATION.as_secs_f64()).contains(&secs) {
        return Err(err("out of range (at most 365 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(SandboxId::new("web-1").is_ok());
        for bad in ["", "..", "a/b", "cgroup.procs", "x\0", &"a".repeat(129)] {
            assert!(SandboxId::new(bad).is_err(), "{bad:?}");
        }
        assert!(SandboxId::new("a".repeat(128)).is_ok());
        let j: Result<SandboxId, _> = serde_json::from_str("\"../x\"");
        assert!(j.is_err());
    }

    /// An ID is at most 128 bytes, and at most 32 characters when one is not ASCII.
    #[test]
    fn non_ascii_ids_are_at_most_32_characters() {
        assert!(SandboxId::new("é".repeat(32)).is_ok());
        assert!(SandboxId::new("😍".repeat(32)).is_ok());
        assert!(SandboxId::new(format!("é{}", "a".repeat(31))).is_ok());
        for bad in [
            "é".repeat(33),
            format!("é{}", "a".repeat(32)),
            format!("{}é", "a".repeat(40)),
        ] {
            let e = SandboxId::new(bad.clone()).unwrap_err().to_string();
            assert!(e.contains("at most 32"), "{bad}: {e}");
        }
        assert!(SandboxId::new("a".repeat(128)).is_ok());
        assert!(SandboxId::new("a".repeat(129)).is_err());
    }

    /// Paths and the CPU quota: what the OpenAPI document says is refused is refused here,
    /// before anything is opened or written.
    #[test]
    fn paths_and_cpus_are_checked() {
        let ok = SandboxSpec::new(
            SandboxId::new("c").unwrap(),
            "/bin/true",
            Vec::<String>::new(),
        );
        let mut s = ok.clone();
        s.cwd = Some("".into());
        assert!(s.validate().unwrap_err().to_string().contains("cwd"));
        s.cwd = Some("/a\0b".into());
        assert!(s.validate().unwrap_err().to_string().contains("cwd"));
        s.cwd = Some("/".into());
        s.validate().unwrap();
        for (name, set) in [
            (
                "stdio.stdin",
                (|s, t| s.stdio.stdin = t) as fn(&mut SandboxSpec, StdioTarget),
            ),
            ("stdio.stdout", |s, t| s.stdio.stdout = t),
            ("stdio.stderr", |s, t| s.stdio.stderr = t),
        ] {
            for bad in ["", "/a\0b"] {
                let mut s = ok.clone();
                set(&mut s, StdioTarget::File(bad.into()));
                let e = s.validate().unwrap_err().to_string();
                assert!(e.contains(name), "{bad:?}: {e}");
            }
        }
        let mut s = ok.clone();
        let min = paddock_cgroup::CpuMax::MIN_CPUS;
        s.limits.cpus = Some(min);
        s.validate().unwrap();
        // Just below the minimum: the kernel's rounding would take it, the bound does not.
        s.limits.cpus = Some(f64::from_bits(min.to_bits() - 1));
        assert!(s.validate().unwrap_err().to_string().contains("cpus"));
        s.limits.cpus = Some(paddock_cgroup::CpuMax::MAX_CPUS);
        s.validate().unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        for bad in ["", "-1M", "M", "1X", "0", "1e400", "NaN"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "-1s", "1x", "s", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spec_validation() {
        let id = SandboxId::new("v").unwrap();
        let mut s = SandboxSpec::new(id, "/bin/true", Vec::<String>::new());
        s.validate().unwrap();
        s.limits.cpus = Some(0.0);
        assert!(s.validate().is_err());
        s.limits.cpus = None;
        s.network = Network::Named("../x".into());
        assert!(s.validate().is_err());
        s.network = Network::Host;
        s.env.insert("A=B".into(), "c".into());
        assert!(s.validate().is_err());
    }

    /// The kernel's ranges and the duration bound: the largest accepted value passes, one
    /// more is refused with a message naming the field.
    #[test]
    fn limits_and_durations_are_bounded() {
        let ok = SandboxSpec::new(
            SandboxId::new("b").unwrap(),
            "/bin/true",
            Vec::<String>::new(),
        );
        let max_ms = MAX_DURATION.as_millis() as u64;
        type Set = fn(&mut SandboxSpec, u64);
        let cases: [(&str, u64, Set); 5] = [
            ("limits.max_descendants", MAX_CGROUP_COUNT_LIMIT, |s, v| {
                s.limits.max_descendants = Some(v)
            }),
            ("limits.max_depth", MAX_CGROUP_COUNT_LIMIT, |s, v| {
                s.limits.max_depth = Some(v)
            }),
            ("limits.pids_max", MAX_PIDS_LIMIT, |s, v| {
                s.limits.pids_max = Some(v)
            }),
            ("stop.grace_period_ms", max_ms, |s, v| {
                s.stop.grace_period_ms = v
            }),
            ("stop.kill_timeout_ms", max_ms, |s, v| {
                s.stop.kill_timeout_ms = v
            }),
        ];
        for (field, max, set) in cases {
            let mut s = ok.clone();
            set(&mut s, max);
            s.validate()
                .unwrap_or_else(|e| panic!("{field} = {max}: {e}"));
            for bad in [max + 1, u64::MAX] {
                let mut s = ok.clone();
                set(&mut s, bad);
                let e = s.validate().unwrap_err().to_string();
                assert!(e.contains(field), "{field} = {bad}: {e}");
            }
        }
        assert_eq!(
            parse_duration(&format!("{}", MAX_DURATION.as_secs())).unwrap(),
            MAX_DURATION
        );
        assert!(parse_duration(&format!("{}", MAX_DURATION.as_secs() + 1)).is_err());
    }

    /// A bad ID in JSON says "sandbox ID: …" once, not wrapped in a second "invalid sandbox
    /// spec" by the decoder.
    #[test]
    fn id_decoding_error_is_the_bare_reason() {
        let e = serde_json::from_str::<SandboxId>("\"../x\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("sandbox ID:"), "{e}");
        assert!(!e.contains("invalid sandbox spec"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn size_and_duration_never_panic(s in "\\PC{0,40}") {
            let _ = parse_size(&s);
            let _ = parse_duration(&s);
        }
    }
}
