//! [`JailSpec::validate`]: every check that needs nothing but the spec, each failure naming
//! the field, in two kinds:
//!
//! - [`JailSpec::validate_fields`]: a field's own value is wrong (a relative path, an
//!   unknown capability, a zero-length id map line). Each of these rules is stated by the
//!   field's JSON schema (`crate::jail::schema`, the OpenAPI document), so the API answers
//!   them with a 400: the body does not match the document.
//! - [`JailSpec::check_consistency`]: every field is valid on its own, but they do not fit
//!   together (a capability both added and dropped, overlapping id map lines, a uid the user
//!   namespace does not map). No JSON schema can say these; the API answers them with a 422.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use super::{
    FilesystemSpec, IdMapSpec, IdOrName, JailSpec, MAX_DEVICES, MAX_GROUPS, MAX_HOSTNAME_LEN,
    MAX_ID, MAX_ID_MAP_LINES, MAX_MASKED_PATHS, MAX_MOUNTS, MAX_NAME_LEN, MAX_PATH_LEN, MAX_PORTS,
    MAX_SECCOMP_NAMES, MAX_SECCOMP_RULES, MAX_TMPFS_MODE, MAX_TMPFS_SIZE, MountSpec, NamespaceKind,
    RlimitsSpec, SeccompSpec,
};

/// Whether `s` fits in `max_bytes` the way a JSON schema can say it (`maxLength` counts
/// characters): all ASCII and at most `max_bytes` long, or at most `max_bytes / 4`
/// characters of any kind (four bytes each at most), as for sandbox IDs.
pub(crate) fn fits(s: &str, max_bytes: usize) -> bool {
    s.len() <= max_bytes && (s.is_ascii() || s.chars().count() <= max_bytes / 4)
}

/// Whether `p` has a component that is a name (not `/`, `.` or `..`).
fn has_name(p: &Path) -> bool {
    p.components().any(|c| matches!(c, Component::Normal(_)))
}

/// A path check's failure, without the field name.
fn path_problem(p: &Path, target: bool) -> Option<String> {
    let b = p.as_os_str().as_bytes();
    if b.is_empty() || b[0] != b'/' {
        return Some("must be an absolute path".into());
    }
    if b.contains(&0) {
        return Some("must not contain NUL bytes".into());
    }
    if !p.to_str().is_some_and(|s| fits(s, MAX_PATH_LEN)) {
        return Some(format!(
            "is too long (at most {MAX_PATH_LEN} ASCII characters, or {} characters when one is not ASCII)",
            MAX_PATH_LEN / 4
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Some("must not contain `..`".into());
    }
    if target && !has_name(p) {
        return Some("must not be `/`".into());
    }
    None
}

fn check_path(field: &str, p: &Path, target: bool) -> Result<(), String> {
    match path_problem(p, target) {
        Some(why) => Err(format!("{field}: {} {why}", p.display())),
        None => Ok(()),
    }
}

/// A uid or gid: a number up to [`MAX_ID`], or a name (1 to [`MAX_NAME_LEN`] bytes as
/// [`fits`] counts them, no `:`, `/` or control characters; one of digits only is that
/// number).
fn check_id(field: &str, n: &IdOrName) -> Result<(), String> {
    if let IdOrName::Name(s) = n
        && (s.is_empty()
            || !fits(s, MAX_NAME_LEN)
            || s.chars().any(|c| c == ':' || c == '/' || c.is_control()))
    {
        return Err(format!(
            "{field}: {s:?} is not a user or group name (1 to {MAX_NAME_LEN} ASCII characters or {} of any kind; no ':', '/' or control characters)",
            MAX_NAME_LEN / 4
        ));
    }
    if n.number() == Some(u32::MAX) {
        return Err(format!("{field}: 4294967295 is not a valid id"));
    }
    Ok(())
}

/// Whether `h` is a valid hostname (RFC 1123 labels of letters, digits and `-`).
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= MAX_HOSTNAME_LEN
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The end of an id range, one past its last id.
fn end(start: u32, count: u32) -> u64 {
    u64::from(start) + u64::from(count)
}

/// One id map's lines on their own: at least one, at most [`MAX_ID_MAP_LINES`], each with
/// ids up to [`MAX_ID`], a count of at least 1, never onto host id 0.
fn check_map_fields(field: &str, lines: &[IdMapSpec]) -> Result<(), String> {
    if lines.is_empty() {
        return Err(format!("{field}: at least one line is needed"));
    }
    if lines.len() > MAX_ID_MAP_LINES {
        return Err(format!(
            "{field}: {} lines; at most {MAX_ID_MAP_LINES}",
            lines.len()
        ));
    }
    for (i, l) in lines.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if l.count == 0 {
            return Err(format!("{f}.count: must be at least 1"));
        }
        if l.outside == 0 {
            return Err(format!(
                "{f}.outside: maps onto host id 0 (root); map onto an unprivileged host range"
            ));
        }
        for (what, id) in [("inside", l.inside), ("outside", l.outside)] {
            if id > MAX_ID {
                return Err(format!(
                    "{f}.{what}: {id} is not a valid id (at most {MAX_ID})"
                ));
            }
        }
    }
    Ok(())
}

/// One id map's lines together: each range ends at the largest id at the latest, and no
/// two overlap, inside or outside.
fn check_map_consistency(field: &str, lines: &[IdMapSpec]) -> Result<(), String> {
    for (i, l) in lines.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if end(l.inside, l.count) > u64::from(u32::MAX)
            || end(l.outside, l.count) > u64::from(u32::MAX)
        {
            return Err(format!(
                "{f}: the range passes {MAX_ID}, the largest id (inside or outside + count must be at most 4294967295)"
            ));
        }
        for (j, m) in lines.iter().enumerate().take(i) {
            let overlap =
                |a: u32, b: u32| u64::from(a) < end(b, m.count) && u64::from(b) < end(a, l.count);
            if overlap(l.inside, m.inside) {
                return Err(format!("{f}: inside ids overlap {field}[{j}]"));
            }
            if overlap(l.outside, m.outside) {
                return Err(format!("{f}: outside ids overlap {field}[{j}]"));
            }
        }
    }
    Ok(())
}

/// Whether `id` is inside one of `lines`' inside ranges.
pub(crate) fn mapped(lines: &[IdMapSpec], id: u32) -> bool {
    lines
        .iter()
        .any(|l| id >= l.inside && u64::from(id) < u64::from(l.inside) + u64::from(l.count))
}

/// The field name of the `i`th rlimit (`jail.rlimits.nofile` or `jail.rlimits[2]`).
fn rlimit_field(r: &RlimitsSpec, i: usize, name: &str) -> String {
    match r {
        RlimitsSpec::Map(_) => format!("jail.rlimits.{name}"),
        RlimitsSpec::List(_) => format!("jail.rlimits[{i}]"),
    }
}

impl JailSpec {
    /// Whether the namespace is asked for explicitly or implied (see
    /// [`JailSpec::namespaces`]).
    pub fn has(&self, ns: NamespaceKind) -> bool {
        let explicit = self.namespaces.contains(&ns);
        explicit
            || match ns {
                NamespaceKind::Mount => {
                    self.filesystem.is_some() || self.namespaces.contains(&NamespaceKind::Pid)
                }
                NamespaceKind::Uts => self.hostname.is_some(),
                NamespaceKind::User => self.user_ns.is_some(),
                _ => false,
            }
    }

    /// The uid the program runs as when it is a number known without the node (`None`
    /// for a name, or a dynamic user).
    fn numeric_uid(&self) -> Option<u32> {
        match &self.user {
            None => Some(0),
            Some(u) if u.dynamic => None,
            Some(u) => match &u.uid {
                None => Some(0),
                Some(n) => n.number(),
            },
        }
    }

    /// Checks everything that can be checked without the node: first each field on its
    /// own ([`JailSpec::validate_fields`]), then how they fit together
    /// ([`JailSpec::check_consistency`]). The error names the field
    /// (`jail.filesystem.mounts[2].target: …`). A spec that passes can still be refused at
    /// start for what needs the node (names, the rootfs, devices, the dynamic range).
    pub fn validate(&self) -> Result<(), String> {
        self.validate_fields()?;
        self.check_consistency()
    }

    /// Checks each field on its own, exactly the rules its JSON schema states (patterns,
    /// bounds, sizes, unique items; see `crate::jail::schema`): a spec whose every field
    /// matches its schema passes, and one that fails breaks the schema of the field named.
    pub fn validate_fields(&self) -> Result<(), String> {
        if let Some(u) = &self.user {
            for (f, v) in [("jail.user.uid", &u.uid), ("jail.user.gid", &u.gid)] {
                if let Some(v) = v {
                    check_id(f, v)?;
                }
            }
            if u.groups.len() > MAX_GROUPS {
                return Err(format!(
                    "jail.user.groups: {} groups; at most {MAX_GROUPS}",
                    u.groups.len()
                ));
            }
            for (i, g) in u.groups.iter().enumerate() {
                check_id(&format!("jail.user.groups[{i}]"), g)?;
            }
        }
        let p = &self.privileges;
        for (f, list) in [("cap_add", &p.cap_add), ("cap_drop", &p.cap_drop)] {
            if list.len() > paddock_proc::jail::CAP_NAMES.len() + 1 {
                return Err(format!(
                    "jail.privileges.{f}: {} entries; there are only {} capabilities (and ALL)",
                    list.len(),
                    paddock_proc::jail::CAP_NAMES.len()
                ));
            }
            for (i, c) in list.iter().enumerate() {
                paddock_proc::jail::CapSet::from_names(&[c])
                    .map_err(|e| format!("jail.privileges.{f}[{i}]: {e}"))?;
            }
        }
        if self.rlimits.len() > paddock_proc::jail::RLIMIT_NAMES.len() {
            return Err(format!(
                "jail.rlimits: {} entries; there are only {} rlimits",
                self.rlimits.len(),
                paddock_proc::jail::RLIMIT_NAMES.len()
            ));
        }
        for (i, (name, _)) in self.rlimits.entries().iter().enumerate() {
            paddock_proc::jail::Rlimit::from_name(name, 0, 0)
                .map_err(|e| format!("{}: {e}", rlimit_field(&self.rlimits, i, name)))?;
        }
        let mut ns = self.namespaces.clone();
        ns.sort();
        if ns.windows(2).any(|w| w[0] == w[1]) {
            return Err("jail.namespaces: a namespace is listed twice".into());
        }
        if let Some(m) = &self.user_ns {
            check_map_fields("jail.user_ns.uid_map", &m.uid_map)?;
            check_map_fields("jail.user_ns.gid_map", &m.gid_map)?;
        }
        if let Some(h) = &self.hostname
            && !valid_hostname(h)
        {
            return Err(format!(
                "jail.hostname: {h:?} is not a hostname (1 to {MAX_HOSTNAME_LEN} bytes; labels of letters, digits and '-', not starting or ending with '-')"
            ));
        }
        if let Some(fs) = &self.filesystem {
            validate_filesystem(fs)?;
        }
        validate_seccomp(&self.seccomp)?;
        for (f, ports) in [
            ("tcp_bind", &self.landlock.tcp_bind),
            ("tcp_connect", &self.landlock.tcp_connect),
        ] {
            if let Some(p) = ports
                && p.len() > MAX_PORTS
            {
                return Err(format!(
                    "jail.landlock.{f}: {} ports; at most {MAX_PORTS}",
                    p.len()
                ));
            }
        }
        Ok(())
    }

    /// Checks how the fields fit together, for a spec that passed
    /// [`JailSpec::validate_fields`]: rules across fields or items that no JSON schema
    /// states (a capability added and dropped, a uid the user namespace does not map, a
    /// rlimit given twice or with its soft limit above its hard one, overlapping id map
    /// lines, a namespace a part needs and is not asked for).
    pub fn check_consistency(&self) -> Result<(), String> {
        let dynamic = self.user.as_ref().is_some_and(|u| u.dynamic);
        if let Some(u) = &self.user
            && u.dynamic
        {
            for (f, v) in [("uid", &u.uid), ("gid", &u.gid)] {
                if v.is_some() {
                    return Err(format!(
                        "jail.user.{f}: not with dynamic: true (the dynamic user's uid and gid are allocated)"
                    ));
                }
            }
        }
        let p = &self.privileges;
        let add = paddock_proc::jail::CapSet::from_names(&p.cap_add).unwrap_or_default();
        for (i, c) in p.cap_drop.iter().enumerate() {
            let d = paddock_proc::jail::CapSet::from_names(&[c]).unwrap_or_default();
            if !c.eq_ignore_ascii_case("all") && d.0 & add.0 != 0 {
                return Err(format!(
                    "jail.privileges.cap_drop[{i}]: {c} is also in cap_add"
                ));
            }
        }
        if !p.cap_add.is_empty()
            && let Some(uid) = self.numeric_uid()
            && uid != 0
        {
            return Err(non_root_caps(uid));
        }
        if dynamic && !p.cap_add.is_empty() {
            return Err(non_root_caps_dynamic());
        }
        let mut seen = Vec::new();
        for (i, (name, r)) in self.rlimits.entries().iter().enumerate() {
            let f = rlimit_field(&self.rlimits, i, name);
            let (soft, hard) = r.raw();
            let lim = paddock_proc::jail::Rlimit::from_name(name, soft, hard)
                .map_err(|e| format!("{f}: {e}"))?;
            if seen.contains(&lim.resource) {
                return Err(format!("{f}: {} is given twice", lim.name()));
            }
            seen.push(lim.resource);
        }
        if let Some(m) = &self.user_ns {
            if dynamic {
                return Err(
                    "jail.user_ns: not with user.dynamic (the dynamic uid is mapped onto itself)"
                        .into(),
                );
            }
            check_map_consistency("jail.user_ns.uid_map", &m.uid_map)?;
            check_map_consistency("jail.user_ns.gid_map", &m.gid_map)?;
            if let Some(u) = &self.user {
                for (f, v, map) in [("uid", &u.uid, &m.uid_map), ("gid", &u.gid, &m.gid_map)] {
                    let id = match v {
                        None => Some(0),
                        Some(v) => v.number(),
                    };
                    if let Some(id) = id
                        && !mapped(map, id)
                    {
                        return Err(format!(
                            "jail.user.{f}: {id} is not mapped by jail.user_ns.{f}_map"
                        ));
                    }
                }
                for (i, g) in u.groups.iter().enumerate() {
                    if let Some(id) = g.number()
                        && !mapped(&m.gid_map, id)
                    {
                        return Err(format!(
                            "jail.user.groups[{i}]: {id} is not mapped by jail.user_ns.gid_map"
                        ));
                    }
                }
            } else if !mapped(&m.uid_map, 0) || !mapped(&m.gid_map, 0) {
                return Err("jail.user_ns: the program runs as uid and gid 0 (no jail.user), which the maps must map".into());
            }
        } else if self.namespaces.contains(&NamespaceKind::User) && !dynamic {
            return Err(
                "jail.namespaces: user needs jail.user_ns (its uid and gid maps) or user.dynamic"
                    .into(),
            );
        }
        if let Some(fs) = &self.filesystem {
            for (i, m) in fs.mounts.iter().enumerate() {
                if matches!(m, MountSpec::Mqueue { .. }) && !self.has(NamespaceKind::Ipc) {
                    return Err(format!(
                        "jail.filesystem.mounts[{i}]: an mqueue mount needs an ipc namespace (add \"ipc\" to jail.namespaces)"
                    ));
                }
            }
        }
        if let SeccompSpec::Oci(o) = &self.seccomp
            && let Some(serde_json::Value::Array(rules)) = o.get("syscalls")
        {
            let names: usize = rules
                .iter()
                .filter_map(|r| r.get("names").and_then(serde_json::Value::as_array))
                .map(Vec::len)
                .sum();
            if names > MAX_SECCOMP_NAMES {
                return Err(format!(
                    "jail.seccomp.syscalls: {names} system call names in all; at most {MAX_SECCOMP_NAMES}"
                ));
            }
        }
        if self.init == Some(true) && !self.has(NamespaceKind::Pid) {
            return Err("jail.init: needs a pid namespace (add \"pid\" to jail.namespaces)".into());
        }
        Ok(())
    }
}

fn validate_filesystem(fs: &FilesystemSpec) -> Result<(), String> {
    if let Some(r) = &fs.rootfs {
        check_path("jail.filesystem.rootfs", r, true)?;
    }
    if fs.mounts.len() > MAX_MOUNTS {
        return Err(format!(
            "jail.filesystem.mounts: {} mounts; at most {MAX_MOUNTS}",
            fs.mounts.len()
        ));
    }
    for (i, m) in fs.mounts.iter().enumerate() {
        let f = format!("jail.filesystem.mounts[{i}]");
        check_path(&format!("{f}.target"), m.target(), true)?;
        match m {
            MountSpec::Bind { source, .. } => check_path(&format!("{f}.source"), source, false)?,
            MountSpec::Tmpfs { size, mode, .. } => {
                if let Some(s) = size
                    && !(1..=MAX_TMPFS_SIZE).contains(s)
                {
                    return Err(format!(
                        "{f}.size: {s} bytes; from 1 to {MAX_TMPFS_SIZE} (1 TiB)"
                    ));
                }
                if *mode > MAX_TMPFS_MODE {
                    return Err(format!(
                        "{f}.mode: {mode:#o} is not a mode (at most 0o7777 = {MAX_TMPFS_MODE})"
                    ));
                }
            }
            MountSpec::Proc { .. } | MountSpec::Sysfs { .. } | MountSpec::Mqueue { .. } => {}
        }
    }
    if fs.devices.len() > MAX_DEVICES {
        return Err(format!(
            "jail.filesystem.devices: {} devices; at most {MAX_DEVICES}",
            fs.devices.len()
        ));
    }
    for (i, d) in fs.devices.iter().enumerate() {
        let f = format!("jail.filesystem.devices[{i}]");
        check_path(&f, d, true)?;
        // `/dev/` as written, then a name: what the schema's pattern says.
        let b = d.as_os_str().as_bytes();
        if !b.starts_with(b"/dev/") || !has_name(Path::new(std::ffi::OsStr::from_bytes(&b[4..]))) {
            return Err(format!(
                "{f}: {} is not under /dev (a path starting with /dev/)",
                d.display()
            ));
        }
    }
    if let Some(m) = &fs.masked_paths {
        if m.len() > MAX_MASKED_PATHS {
            return Err(format!(
                "jail.filesystem.masked_paths: {} paths; at most {MAX_MASKED_PATHS}",
                m.len()
            ));
        }
        for (i, p) in m.iter().enumerate() {
            check_path(&format!("jail.filesystem.masked_paths[{i}]"), p, true)?;
        }
    }
    Ok(())
}

pub(crate) fn non_root_caps(uid: u32) -> String {
    format!(
        "jail.privileges.cap_add: the program runs as uid {uid}, not 0: capabilities do not survive its execve (the ambient set is cleared); run it as uid 0 (in a user namespace, say) to keep capabilities"
    )
}

fn non_root_caps_dynamic() -> String {
    "jail.privileges.cap_add: a dynamic user is not uid 0: capabilities do not survive its execve (the ambient set is cleared)".into()
}

/// The shape and size of an OCI seccomp profile, as its schema states them (the compiler
/// checks the rest when the sandbox starts): `defaultAction` a string; `syscalls`, if
/// given, a list of at most [`MAX_SECCOMP_RULES`] rules, each an object with `names` (a
/// list of strings) and `action` (a string).
fn validate_seccomp(s: &SeccompSpec) -> Result<(), String> {
    let SeccompSpec::Oci(o) = s else {
        return Ok(());
    };
    match o.get("defaultAction") {
        Some(serde_json::Value::String(_)) => {}
        _ => {
            return Err(
                "jail.seccomp.defaultAction: an OCI profile needs its defaultAction (a string such as \"SCMP_ACT_ERRNO\")"
                    .into(),
            );
        }
    }
    let rules = match o.get("syscalls") {
        None => return Ok(()),
        Some(serde_json::Value::Array(a)) => a,
        Some(_) => return Err("jail.seccomp.syscalls: must be a list of rules".into()),
    };
    if rules.len() > MAX_SECCOMP_RULES {
        return Err(format!(
            "jail.seccomp.syscalls: {} rules; at most {MAX_SECCOMP_RULES}",
            rules.len()
        ));
    }
    for (i, r) in rules.iter().enumerate() {
        match r.get("names") {
            Some(serde_json::Value::Array(n)) if n.iter().all(serde_json::Value::is_string) => {}
            _ => {
                return Err(format!(
                    "jail.seccomp.syscalls[{i}].names: must be a list of system call names (strings)"
                ));
            }
        }
        if !r.get("action").is_some_and(serde_json::Value::is_string) {
            return Err(format!(
                "jail.seccomp.syscalls[{i}].action: must be a string such as \"SCMP_ACT_ALLOW\""
            ));
        }
    }
    Ok(())
}
