//! Validated cgroup names.

use std::fmt;

use crate::{Error, Result};

/// Longest cgroup name accepted, in bytes (the usual `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// Prefixes of cgroup interface files. A directory may not be named like one (the kernel
/// refuses some of them, and the others would be confusing to read): [`CgroupName::new`]
/// refuses every name that starts with one of these.
pub const INTERFACE_PREFIXES: &[&str] = &[
    "cgroup.",
    "cpu.",
    "cpuset.",
    "io.",
    "memory.",
    "pids.",
    "rdma.",
    "hugetlb.",
    "misc.",
    "irq.",
    "perf_event.",
    "dmem.",
];

/// A single cgroup directory name that is safe to use under a managed root: not empty, at
/// most 255 bytes, no `/`, no NUL, not `.` or `..`, and not named like a cgroup interface
/// file (`cgroup.*`, `memory.*`, …).
///
/// Holding a `CgroupName` guarantees the name cannot address anything but one direct child
/// of the directory it is used under.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupName(String);

impl CgroupName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate(&name)?;
        Ok(CgroupName(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(name: &str) -> Result<()> {
    let reject = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return reject("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return reject("it is longer than 255 bytes");
    }
    if name.contains('/') {
        return reject("it contains '/'");
    }
    if name.contains('\0') {
        return reject("it contains a NUL byte");
    }
    if name == "." || name == ".." {
        return reject("'.' and '..' are not names");
    }
    if INTERFACE_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return reject("it is named like a cgroup interface file");
    }
    if name.chars().any(|c| c.is_control()) {
        return reject("it contains a control character");
    }
    Ok(())
}

impl fmt::Display for CgroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CgroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for CgroupName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for CgroupName {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        CgroupName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["a", "sbx-1", "web.0a1b", "ünïcode", &"x".repeat(255)] {
            CgroupName::new(n).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names() {
        for n in [
            "",
            ".",
            "..",
            "a/b",
            "/",
            "a\0b",
            "cgroup.procs",
            "cgroup.kill",
            "memory.max",
            "pids.max",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert!(CgroupName::new(n).is_err(), "{n:?} was accepted");
        }
    }

    #[test]
    fn error_names_the_reason() {
        let e = CgroupName::new("../etc").unwrap_err().to_string();
        assert!(e.contains("'/'"), "{e}");
    }
}
