//! JSON schemas of the wire types (feature `openapi`): the parts `#[derive(ToSchema)]`
//! cannot say, built from the same constants the validation uses, so the schema states
//! exactly what [`SandboxSpec::validate`](crate::SandboxSpec::validate) and the ID and
//! lifecycle parsers accept: a value the schema allows is accepted, one it refuses is
//! refused.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{RefOr, schema};
use utoipa::{PartialSchema, ToSchema};

use crate::ids::LifecycleId;
use crate::spec::{MAX_ID_CHARS_NON_ASCII, MAX_ID_LEN, Network, SandboxId};

/// Characters Rust's `char::is_control` refuses (Unicode general category Cc), as a
/// character-class body.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// A string matching none of the characters in `class` (a character-class body).
fn pattern_without(class: &str, allow_empty: bool) -> String {
    format!("^[^{class}]{}$", if allow_empty { "*" } else { "+" })
}

/// The pattern of a valid sandbox ID: exactly the rule of [`SandboxId::new`].
///
/// `maxLength` counts characters while the bound is 128 bytes of UTF-8, so the ID is
/// either all printable ASCII (one byte each) and at most 128 long, or at most 32
/// characters of any kind (four bytes each at most); no `/`, no control character, not
/// `.` or `..`, not named like a cgroup interface file.
pub fn sandbox_id_pattern() -> String {
    let prefixes: Vec<String> = paddock_cgroup::INTERFACE_PREFIXES
        .iter()
        .map(|p| p.replace('.', r"\."))
        .collect();
    format!(
        r"^(?!\.\.?$)(?!(?:{})){}$",
        prefixes.join("|"),
        format_args!(
            r"(?:[\u0020-\u002e\u0030-\u007e]{{1,{MAX_ID_LEN}}}|[^{CONTROL}/]{{1,{MAX_ID_CHARS_NON_ASCII}}})"
        )
    )
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn nullable(t: Type) -> SchemaType {
    [t, Type::Null].into_iter().collect()
}

impl PartialSchema for SandboxId {
    fn schema() -> RefOr<Schema> {
        string()
            .description(Some(
                "A sandbox ID: 1 to 128 bytes of UTF-8 — up to 128 printable ASCII characters, or up to 32 characters of any kind —, no `/`, no control character, not `.` or `..`, not named like a cgroup interface file (`cgroup.*`, `memory.*`, …)",
            ))
            .min_length(Some(1))
            .max_length(Some(MAX_ID_LEN))
            .pattern(Some(sandbox_id_pattern()))
            .examples(["job-1"])
            .into()
    }
}

impl ToSchema for SandboxId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SandboxId")
    }
}

impl PartialSchema for LifecycleId {
    fn schema() -> RefOr<Schema> {
        string()
            .description(Some(
                "One start of a sandbox ID: 16 lower-case hex digits, fresh for every start",
            ))
            .min_length(Some(16))
            .max_length(Some(16))
            .pattern(Some("^[0-9a-f]{16}$"))
            .examples(["1864f0a2b7c3d000"])
            .into()
    }
}

impl ToSchema for LifecycleId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("LifecycleId")
    }
}

impl PartialSchema for Network {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "`host` (the daemon's network namespace), `isolated` (a new one with only loopback, up), or `{\"named\": NAME}`: the namespace `/run/netns/NAME` made by `ip netns add` (a name that does not exist is a 422), or `{\"veth\": {…}}`: a network of the sandbox's own (namespace, veth pair, a /30 of the daemon's pool, optional NAT, published ports, isolation and taps), removed with it; an exhausted pool is a 429",
            ))
            .item(
                string()
                    .enum_values(Some(["host", "isolated"]))
                    .build(),
            )
            .item(
                ObjectBuilder::new()
                    .property(
                        "named",
                        string()
                            .description(Some(
                                "A plain name: not empty, no `/` or NUL, not `.` or `..`",
                            ))
                            .min_length(Some(1))
                            .pattern(Some(r"^(?!\.\.?$)[^/\u0000]+$")),
                    )
                    .required("named")
                    .additional_properties(Some(AdditionalProperties::FreeForm(false))),
            )
            .item(
                ObjectBuilder::new()
                    .property("veth", <crate::VethSpec as PartialSchema>::schema())
                    .required("veth")
                    .additional_properties(Some(AdditionalProperties::FreeForm(false))),
            )
            .into()
    }
}

impl ToSchema for Network {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Network")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        // The `veth` item is inlined: what it refers to must be components.
        <crate::VethSpec as ToSchema>::schemas(schemas);
    }
}

/// `command`: a path, or a name looked up in `PATH`; not empty, no NUL.
pub fn command() -> Object {
    string()
        .description(Some(
            "The program: a path, or a name looked up in `PATH`; not empty, no NUL (a program that cannot be started is a 422)",
        ))
        .min_length(Some(1))
        .pattern(Some(pattern_without(r"\u0000", false)))
        .examples(["echo"])
        .build()
}

/// `args`: strings without NUL.
pub fn args() -> schema::Array {
    ArrayBuilder::new()
        .description(Some("Arguments after `argv[0]`; no NUL"))
        .items(
            string()
                .pattern(Some(pattern_without(r"\u0000", true)))
                .build(),
        )
        .examples([serde_json::json!(["hello"])])
        .build()
}

/// `env`: names not empty, without `=` or NUL; values without NUL.
pub fn env() -> Object {
    ObjectBuilder::new()
        .description(Some(
            "Environment variables, added to the daemon's unless `clear_env`: names not empty, without `=` or NUL; values without NUL",
        ))
        .property_names(Some(
            string()
                .min_length(Some(1))
                .pattern(Some(pattern_without(r"=\u0000", false))),
        ))
        .additional_properties(Some(
            string().pattern(Some(pattern_without(r"\u0000", true))),
        ))
        .build()
}

/// `cwd`: null, or a path: not empty, no NUL.
pub fn cwd() -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .description(Some(
            "Working directory: not empty, no NUL (one that does not exist is a 422); null for the daemon's",
        ))
        .min_length(Some(1))
        .pattern(Some(pattern_without(r"\u0000", false)))
        .build()
}

/// A `{"file": PATH}` target.
fn file_target() -> Object {
    ObjectBuilder::new()
        .property(
            "file",
            string()
                .description(Some(
                    "A regular file, opened by the daemon as root: not a symbolic link, FIFO, device, socket or directory; an absolute path, or with `serve --stdio-dir DIR` a path beneath DIR (relative to it, or absolute under it). Not empty, no NUL. A path the daemon will not open is a 422 naming the field",
                ))
                .min_length(Some(1))
                .pattern(Some(pattern_without(r"\u0000", false))),
        )
        .required("file")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .build()
}

/// `stdio.stdin` through the daemon: `null` or a file.
pub fn stdin_target() -> Schema {
    OneOfBuilder::new()
        .description(Some(
            "fd 0: `null` (/dev/null) or `{\"file\": PATH}` (read from it)",
        ))
        .item(string().enum_values(Some(["null"])).build())
        .item(file_target())
        .build()
        .into()
}

/// `stdio.stdout` and `stdio.stderr` through the daemon: `null`, `log` or a file.
pub fn output_target() -> Schema {
    OneOfBuilder::new()
        .description(Some(
            "`null` (/dev/null), `log` (the sandbox's log file, GET .../logs) or `{\"file\": PATH}` (created if missing, appended to)",
        ))
        .item(string().enum_values(Some(["null", "log"])).build())
        .item(file_target())
        .build()
        .into()
}

/// `limits.cpuset_cpus` and `limits.cpuset_mems`: a list such as `0-3,6`.
pub fn cpuset_list() -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .description(Some(
            "A list of numbers and ranges such as 0-3,6 (each below 8192, ranges forwards: a 422 otherwise)",
        ))
        .pattern(Some(r"^[0-9]{1,7}(-[0-9]{1,7})?(,[0-9]{1,7}(-[0-9]{1,7})?)*$"))
        .build()
}

/// An optional unsigned integer in `minimum..=maximum`.
pub fn opt_u64(minimum: u64, maximum: u64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Integer))
        .description(Some(description))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .build()
}

/// An unsigned integer in `minimum..=maximum`.
pub fn u64_in(minimum: u64, maximum: u64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some(description))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .build()
}

/// `limits.memory_max`.
pub fn memory_max() -> Object {
    opt_u64(1, u64::MAX, "`memory.max` in bytes (at least 1)")
}

/// `limits.io_max[].device`: an absolute path.
pub fn io_device() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .description(Some(
            "The block device by path (`/dev/vdb`): a whole device, not a partition; resolved to its major:minor when the limit is written (not a block device: a 422)",
        ))
        .pattern(Some(r"^/[^\u0000]*$"))
        .examples(["/dev/vdb"])
        .build()
}

/// `limits.hugetlb_max`: bytes by the kernel's name of a huge page size.
fn hugetlb_map(t: SchemaType) -> Object {
    ObjectBuilder::new()
        .schema_type(t)
        .description(Some(
            "`hugetlb.<size>.max`: bytes of huge pages per page size, by the kernel's name of the size (2MB, 1GB); a size the node does not offer is a 422",
        ))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .pattern(Some("^[1-9][0-9]{0,5}(KB|MB|GB)$")),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::Integer))
                .minimum(Some(0))
                .maximum(Some(u64::MAX)),
        ))
        .max_properties(Some(crate::resources::MAX_HUGETLB_SIZES))
        .build()
}

/// `limits.hugetlb_max` of a spec.
pub fn hugetlb_max() -> Object {
    hugetlb_map(SchemaType::new(Type::Object))
}

/// `limits.hugetlb_max` of an update (`null`: leave as it is).
pub fn hugetlb_max_update() -> Object {
    hugetlb_map(nullable(Type::Object))
}

/// `limits.io_weight`.
pub fn io_weight() -> Object {
    opt_u64(
        1,
        10_000,
        "`io.weight`, 1..=10000 (the kernel's default is 100)",
    )
}

/// `limits.memory_low`.
pub fn memory_low() -> Object {
    opt_u64(
        0,
        u64::MAX,
        "`memory.low` in bytes: best-effort protection from reclaim",
    )
}

/// `limits.memory_min`.
pub fn memory_min() -> Object {
    opt_u64(
        0,
        u64::MAX,
        "`memory.min` in bytes: hard protection from reclaim",
    )
}

/// `limits.memory_swap_max`.
pub fn memory_swap_max() -> Object {
    opt_u64(0, u64::MAX, "`memory.swap.max` in bytes (0: no swap)")
}

/// `limits.memory_high`.
pub fn memory_high() -> Object {
    opt_u64(1, u64::MAX, "`memory.high` in bytes (at least 1)")
}

/// `limits.cpus`.
pub fn cpus() -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Number))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .description(Some(
            "`cpu.max` as a number of CPUs (1.5 = one and a half), over the default 100 ms period",
        ))
        .minimum(Some(paddock_cgroup::CpuMax::MIN_CPUS))
        .maximum(Some(paddock_cgroup::CpuMax::MAX_CPUS))
        .build()
}

/// `limits.cpu_weight`.
pub fn cpu_weight() -> Object {
    opt_u64(1, 10_000, "`cpu.weight`")
}

/// `limits.pids_max`.
pub fn pids_max() -> Object {
    opt_u64(
        0,
        crate::spec::MAX_PIDS_LIMIT,
        "`pids.max`: processes and threads (the kernel's PID_MAX_LIMIT at most)",
    )
}

/// `limits.max_descendants`.
pub fn max_descendants() -> Object {
    opt_u64(
        0,
        crate::spec::MAX_CGROUP_COUNT_LIMIT,
        "`cgroup.max.descendants`: child cgroups the payload may create",
    )
}

/// `limits.max_depth`.
pub fn max_depth() -> Object {
    opt_u64(
        0,
        crate::spec::MAX_CGROUP_COUNT_LIMIT,
        "`cgroup.max.depth`: how deep the payload may nest cgroups",
    )
}

/// `stop.signal`.
pub fn stop_signal() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .description(Some(
            "The signal sent to every process first (default 15, SIGTERM)",
        ))
        .minimum(Some(1))
        .maximum(Some(64))
        .build()
}

fn max_ms() -> u64 {
    crate::spec::MAX_DURATION.as_millis() as u64
}

/// `stop.grace_period_ms`.
pub fn grace_period_ms() -> Object {
    u64_in(
        0,
        max_ms(),
        "How long the tree may take to exit on its own, milliseconds (default 10000; at most 365 days)",
    )
}

/// `stop.kill_timeout_ms`.
pub fn kill_timeout_ms() -> Object {
    u64_in(
        1,
        max_ms(),
        "How long the kill may take before the sandbox is quarantined, milliseconds (default 5000; at most 365 days)",
    )
}

/// `deadline_ms`.
pub fn deadline_ms() -> Object {
    opt_u64(
        1,
        max_ms(),
        "A time to live: stopped gracefully (reason deadline) this many milliseconds after it was created (at most 365 days)",
    )
}

/// `restart.max_restarts`.
pub fn max_restarts() -> Object {
    opt_u64(
        0,
        u64::from(u32::MAX),
        "At most this many restarts (absent: no limit)",
    )
}

/// `restart.initial_backoff_ms`.
pub fn initial_backoff_ms() -> Object {
    u64_in(
        1,
        max_ms(),
        "The first backoff before a restart, milliseconds (default 100; at most 365 days)",
    )
}

/// `restart.max_backoff_ms`.
pub fn max_backoff_ms() -> Object {
    u64_in(
        1,
        max_ms(),
        "The longest backoff before a restart, milliseconds (default 30000; at least initial_backoff_ms; at most 365 days)",
    )
}

/// The example spec.
pub fn spec_example() -> serde_json::Value {
    serde_json::json!({ "id": "job-1", "command": "echo", "args": ["hello"] })
}
