//! What this node offers the daemon's sandboxes, read from the kernel: the CPUs and memory
//! the managed root may use, the cgroup mode and the kernel release; and the drain flag's
//! file in the state directory.
//!
//! Every read here is of a small kernel file (`/proc`, the managed root and its
//! ancestors); none is below the managed root, where the cgroup layer's directory fds are
//! the only way in.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The name of the drain flag's file in the state directory: present while the node is
/// draining (its content is the time the drain began, milliseconds since the Unix epoch),
/// so a restarted daemon stays drained until an undrain removes it.
pub const DRAIN_FILE: &str = "draining";

/// Parses a kernel CPU list (`0-3,8,10-11`, as in `cpuset.cpus.effective` and
/// `Cpus_allowed_list`) into the CPU numbers, ascending; `None` when malformed or when it
/// names more than 65536 CPUs (no kernel has that many).
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let s = s.trim();
    let mut cpus = Vec::new();
    if s.is_empty() {
        return Some(cpus);
    }
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if lo > hi || (hi - lo) as usize + cpus.len() >= 65536 {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// The CPUs a sandbox of the managed root at `root` can run on: those of the daemon's
/// affinity (which its payloads inherit) that are also in the root's
/// `cpuset.cpus.effective` when the root has that file (the cpuset controller is enabled
/// for it). At least 1.
pub fn usable_cpus(root: &Path) -> usize {
    let affinity: Option<Vec<u32>> = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(parse_cpu_list)
        })
        .filter(|v| !v.is_empty());
    let effective: Option<Vec<u32>> = fs::read_to_string(root.join("cpuset.cpus.effective"))
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .filter(|v| !v.is_empty());
    let n = match (affinity, effective) {
        (Some(a), Some(e)) => {
            let both = e.iter().filter(|c| a.binary_search(c).is_ok()).count();
            if both == 0 { e.len() } else { both }
        }
        (Some(a), None) => a.len(),
        (None, Some(e)) => e.len(),
        (None, None) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    n.max(1)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total() -> Option<u64> {
    let s = fs::read_to_string("/proc/meminfo").ok()?;
    let kb = s
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kb.checked_mul(1024)
}

/// The lowest `memory.max` of the managed root at `root` and of its ancestors below the
/// cgroup2 mount at `mount` (the memory the root's sandboxes can have together, at most);
/// `None` where none sets one.
pub fn effective_memory_max(root: &Path, mount: &Path) -> Option<u64> {
    let mut low: Option<u64> = None;
    let mut dir = Some(root);
    while let Some(d) = dir {
        if d == mount || !d.starts_with(mount) {
            break;
        }
        if let Ok(s) = fs::read_to_string(d.join("memory.max"))
            && let Ok(v) = s.trim().parse::<u64>()
        {
            low = Some(low.map_or(v, |l| l.min(v)));
        }
        dir = d.parent();
    }
    low
}

/// The memory the managed root's sandboxes can have: `MemTotal`, or the root's effective
/// `memory.max` when that is lower.
pub fn usable_memory(root: &Path, mount: &Path) -> u64 {
    let total = mem_total().unwrap_or(0);
    match effective_memory_max(root, mount) {
        Some(m) if total == 0 || m < total => m,
        _ => total,
    }
}

/// Whether the cgroup hierarchies mounted are cgroup v2 only (`unified`) or v2 beside v1
/// hierarchies (`hybrid`), from the text of `/proc/self/mountinfo`.
pub fn cgroup_mode(mountinfo: &str) -> &'static str {
    let v1 = mountinfo.lines().any(|l| {
        l.split_once(" - ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("cgroup")
    });
    if v1 { "hybrid" } else { "unified" }
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Reads the drain flag: `Ok(None)` when the node is not drained, `Ok(Some(since))` when
/// it is (`since` the time it began, `None` when the file does not say).
pub fn read_drain_file(state_dir: &Path) -> std::io::Result<Option<Option<u64>>> {
    match fs::read_to_string(state_dir.join(DRAIN_FILE)) {
        Ok(s) => Ok(Some(s.trim().parse().ok())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the drain flag's file atomically: written whole under another name, synced, then
/// renamed over [`DRAIN_FILE`] and the directory synced, so a crash leaves either no flag or
/// the whole flag.
pub fn write_drain_file(state_dir: &Path, since_ms: u64) -> Result<(), String> {
    let path = state_dir.join(DRAIN_FILE);
    let tmp = state_dir.join(format!("{DRAIN_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{since_ms}\n").as_bytes())?;
        f.sync_all()
    };
    write().map_err(|e| format!("write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, &path)
        .map_err(|e| format!("rename {} to {}: {e}", tmp.display(), path.display()))?;
    sync_dir(state_dir)
}

/// Removes the drain flag's file (no file: nothing to do) and syncs the directory.
pub fn remove_drain_file(state_dir: &Path) -> Result<(), String> {
    let path = state_dir.join(DRAIN_FILE);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(state_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", path.display())),
    }
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("sync directory {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
        assert_eq!(parse_cpu_list("1,1,0"), Some(vec![0, 1]));
    }

    #[test]
    fn cgroup_modes() {
        let unified = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                      35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      36 31 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup_mode(unified), "unified");
        assert_eq!(cgroup_mode(hybrid), "hybrid");
    }

    #[test]
    fn drain_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("paddock-drain-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_drain_file(&dir).unwrap(), None);
        write_drain_file(&dir, 42).unwrap();
        assert_eq!(read_drain_file(&dir).unwrap(), Some(Some(42)));
        remove_drain_file(&dir).unwrap();
        remove_drain_file(&dir).unwrap();
        assert_eq!(read_drain_file(&dir).unwrap(), None);
        fs::remove_dir(&dir).unwrap();
    }
}
