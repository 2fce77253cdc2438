//! What `/proc` says about a process, for reporting stuck and leaked processes.

use std::fmt;

/// A process as `/proc/<pid>` describes it. Fields that could not be read are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// The process ID (in paddock's PID namespace).
    pub pid: i32,
    /// `/proc/<pid>/comm`.
    pub comm: Option<String>,
    /// The one-letter state from `/proc/<pid>/stat` (`R`, `S`, `D`, `Z`, `T`, …).
    pub state: Option<char>,
    /// `/proc/<pid>/wchan`: the kernel function a sleeping process waits in.
    pub wchan: Option<String>,
}

impl ProcInfo {
    /// Reads what `/proc` has about `pid`; never fails, missing fields are `None`.
    pub fn read(pid: i32) -> Self {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim_end().to_owned());
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat_state(&s));
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && s != "0");
        ProcInfo {
            pid,
            comm,
            state,
            wchan,
        }
    }
}

/// `/proc/<pid>/comm` (without the newline), read with one `read(2)` into a buffer on the
/// stack; `None` if the process is gone.
pub fn comm(pid: i32) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/comm")).ok()?;
    // TASK_COMM_LEN is 16 (64 on newer kernels) including the newline.
    let mut buf = [0u8; 128];
    let n = f.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
}

/// The cgroup v2 path of `pid` as its `/proc/<pid>/cgroup` shows it (the `0::` line), with
/// whether that cgroup has been removed since (the kernel appends ` (deleted)`; an exiting
/// process or a zombie still names the cgroup it died in). `None` if the process is gone.
pub fn cgroup_path(pid: i32) -> Option<(String, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup_v2_line(&text)
}

/// The `0::` line of `/proc/<pid>/cgroup` text: the path, and whether it was removed.
pub fn parse_cgroup_v2_line(text: &str) -> Option<(String, bool)> {
    let line = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(match line.strip_suffix(" (deleted)") {
        Some(p) => (p.to_owned(), true),
        None => (line.to_owned(), false),
    })
}

/// Whether the cgroup path `path` (as `/proc/<pid>/cgroup` shows it) is `cgroup` or inside
/// it.
pub fn cgroup_within(path: &str, cgroup: &str) -> bool {
    path == cgroup
        || path
            .strip_prefix(cgroup)
            .is_some_and(|rest| rest.starts_with('/') || cgroup.ends_with('/'))
}

/// The state letter from the text of `/proc/<pid>/stat` (the field after the `)` that ends
/// the command name, which may itself contain spaces and parentheses).
pub fn parse_stat_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

/// The start time of `pid` (clock ticks since boot, field 22 of `/proc/<pid>/stat`), read
/// with one `read(2)` into a buffer on the stack (`/proc/<pid>/stat` reports a size of 0,
/// so `read_to_string` would take several reads). With the PID, it identifies a process
/// across PID reuse. `None` if the process is gone (or `/proc` is not mounted).
pub fn start_time(pid: i32) -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    // The line is at most ~ 52 numbers plus a 16-byte command name in parentheses.
    let mut buf = [0u8; 1024];
    let n = f.read(&mut buf).ok()?;
    parse_stat_starttime(std::str::from_utf8(&buf[..n]).ok()?)
}

/// The start time field (clock ticks since boot, field 22) of `/proc/<pid>/stat` text.
pub fn parse_stat_starttime(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state); starttime is field 22 → index 19 in rest.
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl fmt::Display for ProcInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(c) = &self.comm {
            write!(f, " ({c})")?;
        }
        if let Some(s) = self.state {
            write!(f, " state {s}")?;
        }
        if let Some(w) = &self.wchan {
            write!(f, " wchan {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let s =
            "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat_state(s), Some('S'));
        assert_eq!(parse_stat_starttime(s), Some(98765));
        assert_eq!(parse_stat_state("garbage"), None);
        assert_eq!(parse_stat_starttime("1 (x) R 1"), None);
    }

    #[test]
    fn cgroup_lines() {
        let t = "12:memory:/x\n0::/paddock/a@0001 (deleted)\n";
        assert_eq!(
            parse_cgroup_v2_line(t),
            Some(("/paddock/a@0001".into(), true))
        );
        assert_eq!(
            parse_cgroup_v2_line("0::/paddock/a@0001/inner\n"),
            Some(("/paddock/a@0001/inner".into(), false))
        );
        assert_eq!(parse_cgroup_v2_line("1:name=systemd:/\n"), None);
        assert!(cgroup_within("/paddock/a@0001/inner", "/paddock/a@0001"));
        assert!(cgroup_within("/paddock/a@0001", "/paddock/a@0001"));
        assert!(!cgroup_within("/paddock/a@00011", "/paddock/a@0001"));
        assert!(cgroup_within("/x", "/"));
        assert!(cgroup_path(std::process::id() as i32).is_some());
    }

    #[test]
    fn self_is_readable() {
        let me = ProcInfo::read(std::process::id() as i32);
        assert!(matches!(me.state, Some('R' | 'S')), "{me:?}");
        assert!(me.comm.is_some());
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(
            start_time(std::process::id() as i32),
            parse_stat_starttime(&own)
        );
        assert!(parse_stat_starttime(&own).unwrap() > 0);
    }
}
