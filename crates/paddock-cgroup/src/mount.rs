//! Finding the cgroup2 hierarchy from `/proc/self/mountinfo`.

use std::path::PathBuf;

use crate::{Error, Result};

/// One line of `/proc/self/mountinfo`, the fields paddock needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The root of the mount within its filesystem (field 4), for cgroups the path of the
    /// mounted cgroup inside the hierarchy.
    pub root: PathBuf,
    /// Where it is mounted (field 5).
    pub mount_point: PathBuf,
    /// The filesystem type (first field after `-`).
    pub fs_type: String,
    /// The super block options (last field), which name the controllers of a v1 mount.
    pub super_options: String,
}

/// Parses the text of `/proc/self/mountinfo`. Malformed lines are an error naming the line.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (left, right) = line
            .split_once(" - ")
            .ok_or_else(|| Error::parse("mountinfo", line, "no ' - ' separator"))?;
        let fields: Vec<&str> = left.split(' ').collect();
        if fields.len() < 6 {
            return Err(Error::parse(
                "mountinfo",
                line,
                "fewer than 6 fields before ' - '",
            ));
        }
        let rfields: Vec<&str> = right.split(' ').collect();
        if rfields.len() < 3 {
            return Err(Error::parse(
                "mountinfo",
                line,
                "fewer than 3 fields after ' - '",
            ));
        }
        out.push(MountEntry {
            root: PathBuf::from(unescape(fields[3])),
            mount_point: PathBuf::from(unescape(fields[4])),
            fs_type: rfields[0].to_owned(),
            super_options: rfields[2].to_owned(),
        });
    }
    Ok(out)
}

/// Undoes mountinfo's octal escapes (`\040` for space and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup2 mount of this process, if any: the first `cgroup2` entry.
pub fn find_cgroup2(entries: &[MountEntry]) -> Option<&MountEntry> {
    entries.iter().find(|e| e.fs_type == "cgroup2")
}

/// Reads `/proc/self/mountinfo` and returns the cgroup2 mount, or [`Error::NoCgroup2`].
pub fn discover() -> Result<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
        Error::io(
            "read",
            "/proc/self/mountinfo",
            rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
        )
    })?;
    discover_in(&text)
}

/// [`discover`] over the given text of a `/proc/<pid>/mountinfo`: the first cgroup2 mount,
/// [`Error::NoCgroup2`] when there is none, or the parse error of a malformed line.
pub fn discover_in(mountinfo: &str) -> Result<MountEntry> {
    let entries = parse_mountinfo(mountinfo)?;
    find_cgroup2(&entries).cloned().ok_or(Error::NoCgroup2)
}

/// Where a controller that the v2 hierarchy lacks lives instead: the mount point of a v1
/// hierarchy that has it bound, if there is one.
pub fn v1_location(entries: &[MountEntry], controller: &str) -> Option<PathBuf> {
    entries
        .iter()
        .filter(|e| e.fs_type == "cgroup")
        .find(|e| e.super_options.split(',').any(|o| o == controller))
        .map(|e| e.mount_point.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PURE: &str = "\
25 20 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_layout() {
        let e = parse_mountinfo(HYBRID).unwrap();
        let m = find_cgroup2(&e).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            v1_location(&e, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(v1_location(&e, "io"), None);
    }

    #[test]
    fn pure_layout_with_optional_fields() {
        let e = parse_mountinfo(PURE).unwrap();
        assert_eq!(
            find_cgroup2(&e).unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup")
        );
    }

    #[test]
    fn escapes_and_elsewhere() {
        let t = "50 1 0:40 /sub /mnt/my\\040cg rw - cgroup2 none rw\n";
        let e = parse_mountinfo(t).unwrap();
        assert_eq!(e[0].mount_point, PathBuf::from("/mnt/my cg"));
        assert_eq!(e[0].root, PathBuf::from("/sub"));
    }

    #[test]
    fn none_mounted() {
        let e = parse_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw\n").unwrap();
        assert!(find_cgroup2(&e).is_none());
    }

    #[test]
    fn discover_in_finds_or_says_none_is_mounted() {
        assert_eq!(
            discover_in(HYBRID).unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(
            discover_in(PURE).unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup")
        );
        // A v1-only host: cgroup hierarchies, but no cgroup2.
        let v1_only = "\
1 0 0:1 / / rw - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";
        for text in [v1_only, ""] {
            let e = discover_in(text).unwrap_err();
            assert!(matches!(e, Error::NoCgroup2), "{e:?}");
            let m = e.to_string();
            assert!(m.starts_with("no cgroup2 hierarchy is mounted"), "{m}");
            assert!(m.contains("/proc/self/mountinfo"), "{m}");
            assert!(m.contains("paddock needs cgroup v2"), "{m}");
            assert!(m.contains("mount -t cgroup2 none /sys/fs/cgroup"), "{m}");
        }
        let e = discover_in("garbage\n").unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e:?}");
    }

    #[test]
    fn malformed() {
        assert!(parse_mountinfo("garbage line\n").is_err());
        assert!(parse_mountinfo("1 2 3 - x\n").is_err());
        assert_eq!(unescape("\\999"), "\\999");
        assert_eq!(unescape("a\\"), "a\\");
    }

    #[test]
    fn this_machine_has_cgroup2() {
        let m = match discover() {
            Ok(m) => m,
            Err(e @ Error::NoCgroup2) => {
                // A failure in CI (PADDOCK_TEST_REQUIRE=1), which needs cgroup2.
                paddock_testutil::skip("this_machine_has_cgroup2", &e.to_string());
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(m.mount_point.join("cgroup.procs").exists());
    }
}
