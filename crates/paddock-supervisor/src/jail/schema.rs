//! JSON schemas of the jail's fields (feature `openapi`): every rule of
//! [`JailSpec::validate_fields`](super::JailSpec::validate_fields) as the field's schema
//! states it — bounds, sizes, unique items and patterns, built from the same constants — so
//! that a jail the OpenAPI document allows passes it, and one that fails it breaks the
//! document (the API's 400). What fields must do together
//! ([`JailSpec::check_consistency`](super::JailSpec::check_consistency), the API's 422) is
//! said in the descriptions.
//!
//! The patterns are ECMA-262 as JSON Schema reads them, and also compile with Python's `re`
//! (what schema-driven generators use): look-ahead only, no look-behind, no inline flags
//! (case-insensitive names are spelled `[Cc][Aa][Pp]_…`), and where a rule is about the
//! whole string, `(?![\s\S]…)` rather than `.` (which stops at line ends) or `$` (which
//! Python also matches before a final newline).

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, Array, ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema,
    SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::{
    IdOrName, LimitValue, MAX_DEVICES, MAX_ID, MAX_MASKED_PATHS, MAX_NAME_LEN, MAX_PATH_LEN,
    MAX_PORTS, MAX_SECCOMP_NAMES, MAX_SECCOMP_RULES, MAX_TMPFS_MODE, MAX_TMPFS_SIZE, NamedRlimit,
    NamespaceKind, RlimitRange, RlimitsSpec, SeccompBuiltin, SeccompSpec, UnlimitedWord,
};

/// Characters Rust's `char::is_control` refuses (Unicode general category Cc), as a
/// character-class body.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// No NUL anywhere.
const NO_NUL: &str = r"(?![\s\S]*\u0000)";

/// No `..` component anywhere (`/..` followed by `/` or the end).
const NO_DOTDOT: &str = r"(?![\s\S]*/\.\.(?![^/]))";

/// After the leading `/`: a component that is a name (not empty, not `.`), somewhere.
const A_NAME: &str = r"(?:[\s\S]*/)?(?:[^/.]|\.[^/])";

fn nullable(t: Type) -> SchemaType {
    [t, Type::Null].into_iter().collect()
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// The rule of `validate::fits` for `max_bytes`, as a look-ahead: at most `max_bytes / 4`
/// characters, or only ASCII (the `maxLength` of `max_bytes` bounds that case).
fn fits(max_bytes: usize) -> String {
    format!(
        r"(?:(?![\s\S]{{{}}})|(?![\s\S]*[^\u0000-\u007f]))",
        max_bytes / 4 + 1
    )
}

/// `word` matched without regard to ASCII case (`[Cc][Aa][Pp]_`).
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A capability name: any ASCII case, with or without `CAP_`, or `ALL`; exactly what
/// `paddock_proc::jail::CapSet::from_names` takes.
pub fn capability_pattern() -> String {
    let names: Vec<String> = paddock_proc::jail::CAP_NAMES
        .iter()
        .map(|n| any_case(n))
        .collect();
    format!(
        "^(?:{}|(?:{})?(?:{}))$",
        any_case("ALL"),
        any_case("CAP_"),
        names.join("|")
    )
}

/// An rlimit name: any ASCII case, with or without `RLIMIT_`; exactly what
/// `paddock_proc::jail::Rlimit::from_name` takes.
pub fn rlimit_name_pattern() -> String {
    let names: Vec<String> = paddock_proc::jail::RLIMIT_NAMES
        .iter()
        .map(|n| any_case(n))
        .collect();
    format!("^(?:{})?(?:{})$", any_case("RLIMIT_"), names.join("|"))
}

/// A user or group name (or a number written as digits): not empty, no `:`, `/` or
/// control character, at most [`MAX_NAME_LEN`] ASCII characters or a quarter as many of
/// any kind, and not the number 4294967295.
pub fn user_name_pattern() -> String {
    format!(r"^(?!0*4294967295$){}[^:/{CONTROL}]+$", fits(MAX_NAME_LEN))
}

/// An absolute path: starts with `/`, no NUL, no `..` component, at most
/// [`MAX_PATH_LEN`] ASCII characters or a quarter as many of any kind.
pub fn source_path_pattern() -> String {
    format!("^{NO_NUL}{NO_DOTDOT}{}/", fits(MAX_PATH_LEN))
}

/// A path in the jail: an absolute path (as [`source_path_pattern`]) with a name in it
/// (not `/`, `/.`, `//`).
pub fn target_path_pattern() -> String {
    format!("^{NO_NUL}{NO_DOTDOT}{}/{A_NAME}", fits(MAX_PATH_LEN))
}

/// A device: a path in the jail (as [`target_path_pattern`]) starting with `/dev/`, with a
/// name after it.
pub fn device_pattern() -> String {
    format!("^{NO_NUL}{NO_DOTDOT}{}/dev/{A_NAME}", fits(MAX_PATH_LEN))
}

fn path(description: &str, pattern: String) -> ObjectBuilder {
    string()
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(MAX_PATH_LEN))
        .pattern(Some(pattern))
}

const PATH_RULES: &str =
    "absolute, no `..` component, no NUL, at most 4096 ASCII characters or 1024 of any kind";

/// A bind mount's `source`.
pub fn source_path() -> Object {
    path(&format!("Host path ({PATH_RULES})"), source_path_pattern()).build()
}

/// A mount's `target`.
pub fn target_path() -> Object {
    path(
        &format!("Path in the jail ({PATH_RULES}; not `/`)"),
        target_path_pattern(),
    )
    .build()
}

/// `filesystem.rootfs`.
pub fn rootfs() -> Object {
    path(
        &format!(
            "A directory that becomes `/` (`pivot_root`; {PATH_RULES}; not `/`); it must exist when the sandbox starts (else a 422). Without one: the host's tree, with the mounts on top"
        ),
        target_path_pattern(),
    )
    .schema_type(nullable(Type::String))
    .build()
}

/// `filesystem.devices`.
pub fn devices() -> Array {
    ArrayBuilder::new()
        .description(Some(format!(
            "Host character devices exposed at the same path (`/dev/kvm`, `/dev/net/tun`): paths starting with `/dev/` ({PATH_RULES}); at most {MAX_DEVICES}. One that is not a character device on the node is a 422"
        )))
        .items(path("A device under `/dev/`", device_pattern()))
        .max_items(Some(MAX_DEVICES))
        .build()
}

/// `filesystem.masked_paths`.
pub fn masked_paths() -> Array {
    ArrayBuilder::new()
        .schema_type(nullable(Type::Array))
        .description(Some(format!(
            "Paths hidden from the program ({PATH_RULES}; not `/`); default runc's list (`/proc/kcore`, `/proc/keys`, `/proc/sysrq-trigger`, …), `[]` masks nothing; at most {MAX_MASKED_PATHS}"
        )))
        .items(path("A path in the jail", target_path_pattern()))
        .max_items(Some(MAX_MASKED_PATHS))
        .build()
}

/// A tmpfs mount's `size`.
pub fn tmpfs_size() -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Integer))
        .description(Some(
            "Size in bytes, 1 to 1 TiB (default: the kernel's, half of RAM; what it holds is charged to the sandbox's memory)",
        ))
        .minimum(Some(1))
        .maximum(Some(MAX_TMPFS_SIZE))
        .build()
}

/// A tmpfs mount's `mode`.
pub fn tmpfs_mode() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some(
            "Mode of its root, as a number (default 0755 = 493; at most 07777 = 4095)",
        ))
        .minimum(Some(0))
        .maximum(Some(MAX_TMPFS_MODE))
        .build()
}

fn id_integer(minimum: u32, maximum: u32, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some(description))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .build()
}

/// An id map line's `inside`.
pub fn id_map_inside() -> Object {
    id_integer(
        0,
        MAX_ID,
        "First id inside the namespace (at most 4294967294; inside + count at most 4294967295, else a 422)",
    )
}

/// An id map line's `outside`.
pub fn id_map_outside() -> Object {
    id_integer(
        1,
        MAX_ID,
        "First id outside (on the host): never 0 (root), at most 4294967294 (outside + count at most 4294967295, else a 422), never in the dynamic uid range (a 422)",
    )
}

/// An id map line's `count`.
pub fn id_map_count() -> Object {
    id_integer(
        1,
        u32::MAX,
        "How many ids (at least 1). The lines of a map must not overlap, inside or outside (a 422)",
    )
}

fn capability_list(description: &str) -> Array {
    ArrayBuilder::new()
        .description(Some(description))
        .items(
            string()
                .description(Some(
                    "A capability: `CAP_NET_ADMIN`, `net_admin` (any case, with or without `CAP_`), or `ALL`",
                ))
                .pattern(Some(capability_pattern())),
        )
        .max_items(Some(paddock_proc::jail::CAP_NAMES.len() + 1))
        .build()
}

/// `privileges.cap_add`.
pub fn cap_add() -> Array {
    capability_list(
        "Capabilities kept in addition to the default set (`CAP_NET_ADMIN` or `net_admin`). Only for uid 0, not with a dynamic user (a 422): the ambient set is cleared, so a non-root program keeps none across `execve`",
    )
}

/// `privileges.cap_drop`.
pub fn cap_drop() -> Array {
    capability_list(
        "Capabilities dropped from the default set; `ALL` drops every one (then `cap_add` is the whole set). One also in `cap_add` is a 422",
    )
}

/// An rlimit's name (the list form's `name`, the map form's keys).
pub fn rlimit_name() -> Object {
    string()
        .description(Some(
            "`nofile`, `NOFILE` or `RLIMIT_NOFILE` (any case). The same rlimit given twice is a 422",
        ))
        .pattern(Some(rlimit_name_pattern()))
        .build()
}

/// `namespaces`.
pub fn namespaces() -> Array {
    ArrayBuilder::new()
        .description(Some(
            "Namespaces to unshare beyond the network's, each once; `filesystem` implies `mount`, `hostname` implies `uts`, `user_ns` implies `user`, `pid` implies `mount`. `user` needs `user_ns` or a dynamic user, and an `mqueue` mount the `ipc` namespace (else a 422)",
        ))
        .items(NamespaceKind::schema())
        .unique_items(true)
        .build()
}

fn ports(description: &str) -> Array {
    ArrayBuilder::new()
        .schema_type(nullable(Type::Array))
        .description(Some(description))
        .items(id_integer(0, u16::MAX.into(), "A TCP port"))
        .max_items(Some(MAX_PORTS))
        .build()
}

/// `landlock.tcp_bind`.
pub fn tcp_bind() -> Array {
    ports("TCP ports the program may bind (at most 64); absent: not restricted")
}

/// `landlock.tcp_connect`.
pub fn tcp_connect() -> Array {
    ports("TCP ports the program may connect to (at most 64); absent: not restricted")
}

impl PartialSchema for IdOrName {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "A user or group by number (0 to 4294967294), or by name (resolved in the parent: in the rootfs's `/etc/passwd` and `/etc/group` when the jail has a rootfs, as Docker does, else in the host's; a name the node lacks is a 422). A name made only of digits is that number",
            ))
            .item(id_integer(0, MAX_ID, "A number"))
            .item(
                string()
                    .description(Some(format!(
                        "A name: 1 to {MAX_NAME_LEN} ASCII characters or {} of any kind; no `:`, `/` or control characters",
                        MAX_NAME_LEN / 4
                    )))
                    .min_length(Some(1))
                    .max_length(Some(MAX_NAME_LEN))
                    .pattern(Some(user_name_pattern())),
            )
            .into()
    }
}

impl ToSchema for IdOrName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("IdOrName")
    }
}

impl PartialSchema for LimitValue {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "An rlimit value: a number, or `\"unlimited\"` (`RLIM_INFINITY`)",
            ))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("A number"))
                    .minimum(Some(0))
                    .maximum(Some(u64::MAX)),
            )
            .item(RefOr::Ref(Ref::from_schema_name(UnlimitedWord::name())))
            .into()
    }
}

impl ToSchema for LimitValue {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("LimitValue")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((UnlimitedWord::name().into(), UnlimitedWord::schema()));
    }
}

impl PartialSchema for RlimitsSpec {
    fn schema() -> RefOr<Schema> {
        let max = paddock_proc::jail::RLIMIT_NAMES.len();
        OneOfBuilder::new()
            .description(Some(format!(
                "Resource limits (`setrlimit`), by name: `{{\"nofile\": {{\"soft\": 1024, \"hard\": 4096}}}}`, or a list `[{{\"name\": \"nofile\", \"soft\": 1024, \"hard\": 4096}}]` (applied in order); at most {max}. A soft limit above its hard one, or an rlimit given twice (`nofile` and `NOFILE`), is a 422"
            )))
            .item(
                ObjectBuilder::new()
                    .description(Some("By name"))
                    .property_names(Some(rlimit_name()))
                    .additional_properties(Some(AdditionalProperties::RefOr(RefOr::Ref(
                        Ref::from_schema_name(RlimitRange::name()),
                    ))))
                    .max_properties(Some(max)),
            )
            .item(
                ArrayBuilder::new()
                    .description(Some("A list"))
                    .items(RefOr::Ref(Ref::from_schema_name(NamedRlimit::name())))
                    .max_items(Some(max)),
            )
            .into()
    }
}

impl ToSchema for RlimitsSpec {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RlimitsSpec")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((RlimitRange::name().into(), RlimitRange::schema()));
        <RlimitRange as ToSchema>::schemas(schemas);
        schemas.push((NamedRlimit::name().into(), NamedRlimit::schema()));
        <NamedRlimit as ToSchema>::schemas(schemas);
    }
}

/// An OCI `linux.seccomp` object: the shape [`validate_fields`] checks; other members
/// (`architectures`, `flags`, a rule's `args`, …) are read by the compiler at start.
///
/// [`validate_fields`]: super::JailSpec::validate_fields
fn oci_seccomp() -> Object {
    let rule = ObjectBuilder::new()
        .description(Some(
            "A rule: the system calls it names get its action (`args`, `errnoRet` and the rest of the OCI format as well)",
        ))
        .property(
            "names",
            ArrayBuilder::new()
                .description(Some("System call names"))
                .items(string()),
        )
        .required("names")
        .property(
            "action",
            string().description(Some("`SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO`, …")),
        )
        .required("action")
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    ObjectBuilder::new()
        .description(Some(format!(
            "An OCI `linux.seccomp` object (`defaultAction`, `architectures`, `syscalls`); at most {MAX_SECCOMP_RULES} rules. More than {MAX_SECCOMP_NAMES} system call names over all rules, or a profile the compiler refuses (an unknown action or system call), is a 422"
        )))
        .property(
            "defaultAction",
            string().description(Some("The action of a system call no rule names, such as `SCMP_ACT_ERRNO`")),
        )
        .required("defaultAction")
        .property(
            "syscalls",
            ArrayBuilder::new()
                .description(Some("The rules"))
                .items(rule)
                .max_items(Some(MAX_SECCOMP_RULES)),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .build()
}

impl PartialSchema for SeccompSpec {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "The seccomp filter: `\"default\"` (a deny-list comparable to Docker's), `\"unconfined\"`, or a profile in the OCI runtime-spec `linux.seccomp` format",
            ))
            .item(RefOr::Ref(Ref::from_schema_name(SeccompBuiltin::name())))
            .item(oci_seccomp())
            .into()
    }
}

impl ToSchema for SeccompSpec {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SeccompSpec")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((SeccompBuiltin::name().into(), SeccompBuiltin::schema()));
    }
}
