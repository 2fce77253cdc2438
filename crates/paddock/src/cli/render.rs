//! Rendering for the terminal and for scripts: tables cut on character boundaries, every
//! character that could drive a terminal escaped, and JSON with those characters as `\u`
//! escapes. Pure functions of their input (property-tested over arbitrary Unicode).
//!
//! Over 600 lines with its tests (about 440 without): the property tests sit next to the
//! escaping they check.

use std::borrow::Cow;
use std::fmt::Write as _;

use anyhow::Result;
use paddock_supervisor::{SandboxInfo, SandboxStats, StopReport};
use serde_json::Value;

macro_rules! delegate_pretty {
    ($($name:ident($($arg:ident: $t:ty),*);)*) => {$(
        fn $name<W: ?Sized + std::io::Write>(&mut self, w: &mut W $(, $arg: $t)*) -> std::io::Result<()> {
            match &mut self.pretty {
                Some(p) => p.$name(w $(, $arg)*),
                None => serde_json::ser::CompactFormatter.$name(w $(, $arg)*),
            }
        }
    )*};
}

/// Whether printing `c` to a terminal could do more than show a glyph: control characters
/// (C0, DEL and C1 — ESC and CSI among them: cursor moves, colours, window titles, screen
/// rewrites), bidirectional overrides and isolates (which reorder what is shown), and the
/// Unicode line and paragraph separators.
pub fn dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `s` made safe to print to a terminal: every [`dangerous`] character is shown as its
/// Rust escape (`\n`, `\t`, `\u{1b}`, `\u{202e}`), everything else as it is.
pub fn term_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(dangerous) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if dangerous(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`term_safe`] text cut to at most `width` characters (never inside a character), with
/// `...` at the end when cut.
pub fn fit(s: &str, width: usize) -> String {
    let safe = term_safe(s);
    if safe.chars().count() <= width {
        return safe.into_owned();
    }
    let mut out: String = safe.chars().take(width.saturating_sub(3)).collect();
    out.push_str(&"..."[..3.min(width)]);
    out
}

/// A serde_json formatter that writes [`dangerous`] characters in strings as `\uXXXX`
/// escapes (serde_json escapes only C0): the same JSON, safe to show in a terminal.
pub(crate) struct SafeJson {
    pretty: Option<serde_json::ser::PrettyFormatter<'static>>,
}

impl serde_json::ser::Formatter for SafeJson {
    delegate_pretty! {
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
        begin_object();
        end_object();
        begin_object_key(first: bool);
        begin_object_value();
        end_object_value();
    }
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some((i, c)) = rest.char_indices().find(|(_, c)| dangerous(*c)) {
            w.write_all(&rest.as_bytes()[..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            rest = &rest[i + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }
}

/// `v` as JSON, pretty or on one line, with [`dangerous`] characters escaped.
pub fn safe_json(v: &impl serde::Serialize, pretty: bool) -> Result<String> {
    let mut buf = Vec::new();
    let f = SafeJson {
        pretty: pretty.then(serde_json::ser::PrettyFormatter::new),
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, f);
    v.serialize(&mut ser)?;
    Ok(String::from_utf8(buf).expect("serde_json writes UTF-8"))
}

/// The jail of a sandbox for `paddock inspect --jail`: who the program runs as (and its
/// dynamic uid), its capabilities, namespaces, filesystem, seccomp and Landlock (the mode
/// asked for, and the ABI enforced once the process layer reports it), one item per line,
/// terminal-safe.
pub fn render_jail(i: &SandboxInfo) -> String {
    use paddock_supervisor::jail::{MountSpec, SeccompBuiltin, SeccompSpec};
    let Some(spec) = &i.spec.jail else {
        return format!(
            "{}: no jail (runs as the supervisor does)\n",
            term_safe(i.id.as_str())
        );
    };
    let mut out = format!("{}: jail\n", term_safe(i.id.as_str()));
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "  {k:<13}{}", term_safe(&v));
    };
    match &i.jail {
        Some(st) => {
            let dynamic = match st.dynamic_uid {
                Some(d) => format!(" (dynamic uid {d} of the daemon's range)"),
                None => String::new(),
            };
            line("user", format!("uid {} gid {}{dynamic}", st.uid, st.gid));
            if !st.groups.is_empty() {
                let g: Vec<String> = st.groups.iter().map(u32::to_string).collect();
                line("groups", g.join(", "));
            }
            line(
                "capabilities",
                if st.capabilities.is_empty() {
                    "none".into()
                } else {
                    st.capabilities.join(", ")
                },
            );
        }
        None => line("user", "not resolved (the sandbox never started)".into()),
    }
    let ns = paddock_supervisor::jail::namespaces(spec);
    let names: Vec<&str> = [
        (paddock_supervisor::Namespaces::PID, "pid"),
        (paddock_supervisor::Namespaces::MOUNT, "mount"),
        (paddock_supervisor::Namespaces::IPC, "ipc"),
        (paddock_supervisor::Namespaces::UTS, "uts"),
        (paddock_supervisor::Namespaces::CGROUP, "cgroup"),
        (paddock_supervisor::Namespaces::USER, "user"),
    ]
    .iter()
    .filter(|(b, _)| ns.contains(*b))
    .map(|(_, n)| *n)
    .collect();
    line(
        "namespaces",
        if names.is_empty() {
            "none new".into()
        } else {
            names.join(", ")
        },
    );
    if let Some(h) = &spec.hostname {
        line("hostname", h.clone());
    }
    if let Some(fs) = &spec.filesystem {
        let root = match &fs.rootfs {
            Some(r) => r.display().to_string(),
            None => "the host's tree".into(),
        };
        line(
            "root",
            format!("{root}{}", if fs.readonly { " (read-only)" } else { "" }),
        );
        for m in &fs.mounts {
            let v = match m {
                MountSpec::Bind {
                    source,
                    target,
                    readonly,
                    ..
                } => format!(
                    "bind {} -> {}{}",
                    source.display(),
                    target.display(),
                    if *readonly { " (ro)" } else { "" }
                ),
                MountSpec::Tmpfs { target, size, .. } => format!(
                    "tmpfs {}{}",
                    target.display(),
                    size.map(|s| format!(" ({})", human_bytes(s)))
                        .unwrap_or_default()
                ),
                MountSpec::Proc { target } => format!("proc {}", target.display()),
                MountSpec::Sysfs { target } => format!("sysfs {}", target.display()),
                MountSpec::Mqueue { target } => format!("mqueue {}", target.display()),
            };
            line("mount", v);
        }
        for d in &fs.devices {
            line("device", d.display().to_string());
        }
    }
    line(
        "seccomp",
        match &spec.seccomp {
            SeccompSpec::Builtin(SeccompBuiltin::Default) => "default".into(),
            SeccompSpec::Builtin(SeccompBuiltin::Unconfined) => "unconfined".into(),
            SeccompSpec::Oci(o) => format!(
                "OCI profile ({} rules)",
                o.get("syscalls")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
        },
    );
    let abi = match i.jail.as_ref().and_then(|s| s.landlock_abi) {
        Some(a) => format!("ABI {a} enforced"),
        None => "no ABI reported".into(),
    };
    line(
        "landlock",
        format!(
            "{}, {abi}",
            serde_json::to_value(spec.landlock.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
    );
    line(
        "no_new_privs",
        spec.privileges.no_new_privs.unwrap_or(true).to_string(),
    );
    out
}

pub(crate) fn age(ms: u64, now: u64) -> String {
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Widest COMMAND shown by `paddock ps`, in characters.
pub const PS_COMMAND_WIDTH: usize = 40;

pub(crate) fn command_line(i: &SandboxInfo) -> String {
    let mut s = i.spec.command.clone();
    for a in &i.spec.args {
        s.push(' ');
        s.push_str(a);
    }
    fit(&s, PS_COMMAND_WIDTH)
}

/// The table of `paddock ps` (ages relative to `now_ms`): terminal-safe, one line per
/// sandbox after the header.
pub fn render_ps(list: &[SandboxInfo], now_ms: u64) -> String {
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|i| {
            [
                term_safe(i.id.as_str()).into_owned(),
                i.lifecycle.to_string(),
                if i.paused {
                    format!("{} (paused)", i.state)
                } else {
                    i.state.to_string()
                },
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                age(i.created_at_ms, now_ms),
                command_line(i),
            ]
        })
        .collect();
    // Each column as wide as its widest cell (at least its usual width): a long ID or a
    // paused state widens its column instead of pushing the rest of its row right.
    let width = |n: usize, min: usize| {
        rows.iter()
            .map(|r| r[n].chars().count())
            .fold(min, usize::max)
    };
    let (wi, wl, ws, wp, wa) = (
        width(0, 24),
        width(1, 16),
        width(2, 12),
        width(3, 8),
        width(4, 5),
    );
    let mut o = format!(
        "{:<wi$} {:<wl$} {:<ws$} {:>wp$} {:>wa$}  COMMAND\n",
        "ID", "LIFECYCLE", "STATE", "PID", "AGE"
    );
    for [id, lc, state, pid, age, cmd] in &rows {
        let _ = writeln!(
            o,
            "{id:<wi$} {lc:<wl$} {state:<ws$} {pid:>wp$} {age:>wa$}  {cmd}"
        );
    }
    o
}

/// The line `paddock stop` and `kill` print (terminal-safe, with its newline).
pub fn render_report(id: &str, r: &StopReport) -> String {
    format!(
        "{id}: stopped in {:.0} ms (grace {:.0} ms, kill {:.0} ms, remove {:.0} ms), {} signalled, {} killed after the grace period{}\n",
        r.total_ms,
        r.grace_ms,
        r.kill_ms,
        r.remove_ms,
        r.signalled,
        r.killed_after_grace,
        if r.stuck.is_empty() {
            String::new()
        } else {
            format!(", QUARANTINED: {} stuck", r.stuck.len())
        },
        id = term_safe(id),
    )
}

pub(crate) fn opt_bytes(v: Option<u64>) -> String {
    v.map(human_bytes).unwrap_or_else(|| "n/a".into())
}

/// Bytes in binary units.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", U[i])
}

/// One line of `paddock events` for the event `data` (JSON) — seq, ID, lifecycle, type and
/// the other fields as JSON (a `lagged` event: how many were missed) — terminal-safe, with
/// its newline; with `json`, the event itself on one line (re-encoded with dangerous
/// characters escaped).
pub fn render_event(data: &str, json: bool) -> String {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    if json {
        let mut line = safe_json(&v, false).unwrap_or_else(|_| "null".into());
        line.push('\n');
        return line;
    }
    if v.get("type").is_none()
        && let Some(missed) = v.get("missed").and_then(Value::as_u64)
    {
        return format!(
            "- lagged: {missed} events missed (dropped from the daemon's event ring before this stream read them)\n"
        );
    }
    let mut rest = v.clone();
    if let Some(m) = rest.as_object_mut() {
        for k in ["seq", "id", "lifecycle", "at_ms", "type"] {
            m.remove(k);
        }
    }
    let rest = if rest.as_object().is_some_and(|m| m.is_empty()) {
        String::new()
    } else {
        safe_json(&rest, false).unwrap_or_default()
    };
    format!(
        "{} {} {} {} {}\n",
        v["seq"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        term_safe(v["id"].as_str().unwrap_or("-")),
        term_safe(v["lifecycle"].as_str().unwrap_or("-")),
        term_safe(v["type"].as_str().unwrap_or("?")),
        rest
    )
}

/// A row of `paddock top`: the sandbox, its usage, and its CPU share since the last
/// refresh (percent of one CPU).
pub type TopRow = (SandboxInfo, SandboxStats, Option<f64>);

/// The pressure lines of `paddock stats`: per resource, `some` and `full` as avg10 /
/// avg60 percent and the total stall time.
pub fn render_pressure(p: &paddock_supervisor::SandboxPressure) -> String {
    let mut o = String::new();
    for (res, stats) in p.by_resource() {
        let Some(st) = stats else {
            let _ = writeln!(o, "{:<15} n/a", format!("{res}.pressure:"));
            continue;
        };
        let line = |l: &paddock_supervisor::PsiLine| {
            format!(
                "{:.2}%/{:.2}% (10s/60s), {:.3}s total",
                l.avg10,
                l.avg60,
                l.total_usec as f64 / 1e6
            )
        };
        let full = st.full.as_ref().map(line).unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            o,
            "{:<15} some {}; full {}",
            format!("{res}.pressure:"),
            line(&st.some),
            full
        );
    }
    o
}

/// The PSI column of `paddock top`: `some` avg10 of cpu/memory/io, in percent.
pub(crate) fn psi_cell(p: &paddock_supervisor::SandboxPressure) -> String {
    p.by_resource()
        .iter()
        .map(|(_, s)| {
            s.map(|s| format!("{:.0}", s.some.avg10))
                .unwrap_or_else(|| "-".into())
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::top::render_top;
    use paddock_supervisor::{LifecycleId, MainExit, SandboxId, SandboxSpec, State, StopReport};
    use proptest::prelude::*;

    /// Whether `out` has no [`dangerous`] character but the line breaks of its lines.
    fn terminal_safe_lines(out: &str) -> bool {
        out.chars().all(|c| c == '\n' || !dangerous(c))
    }

    fn info(id: &str, command: &str, args: Vec<String>, error: Option<String>) -> SandboxInfo {
        let id = SandboxId::new(id).unwrap_or_else(|_| SandboxId::new("x").unwrap());
        SandboxInfo {
            id: id.clone(),
            lifecycle: LifecycleId::fresh(),
            state: State::Running,
            paused: false,
            current: true,
            pid: Some(42),
            cgroup_path: "/sys/fs/cgroup/x".into(),
            main_exit: Some(MainExit {
                code: Some(0),
                signal: None,
                core_dumped: false,
            }),
            stop_report: None,
            stuck: Vec::new(),
            error,
            created_at_ms: 0,
            spec: SandboxSpec::new(id, command, args),
            jail: None,
            deadline_at_ms: None,
            restart_count: 0,
            restart_pending: None,
            network: None,
        }
    }

    fn report() -> StopReport {
        serde_json::from_value(serde_json::json!({
            "reason": "requested", "signalled": 1, "signal_ms": 0.1, "grace_ms": 1.0,
            "killed_after_grace": 0, "killed": [], "kill_ms": 0.0, "remove_ms": 0.2,
            "rmdir_fallback": false, "pids_frozen": false, "total_ms": 1.3,
            "cpu_usage_usec": null, "memory_peak": null, "oom_kills": null,
            "stuck": [], "error": null
        }))
        .unwrap()
    }

    /// `inspect --jail`: the resolved user with its dynamic uid, the implied namespaces,
    /// mounts, seccomp and Landlock, every line terminal-safe.
    #[test]
    fn jail_rendering() {
        let mut i = info("j", "/bin/true", vec![], None);
        assert_eq!(
            render_jail(&i),
            "j: no jail (runs as the supervisor does)\n"
        );
        i.spec.jail = Some(
            serde_json::from_value(serde_json::json!({
                "user": {"dynamic": true},
                "namespaces": ["pid"],
                "filesystem": {"rootfs": "/srv/r\u{1b}[2J", "readonly": true,
                               "mounts": [{"type": "bind", "source": "/a", "target": "/b", "readonly": true},
                                          {"type": "tmpfs", "target": "/tmp", "size": 1048576}],
                               "devices": ["/dev/kvm"]},
                "seccomp": "unconfined"
            }))
            .unwrap(),
        );
        let out = render_jail(&i);
        assert!(out.contains("user         not resolved"), "{out}");
        i.jail = Some(paddock_supervisor::JailStatus {
            uid: 200_001,
            gid: 200_001,
            groups: vec![108],
            dynamic_uid: Some(200_001),
            capabilities: vec![],
            landlock_mode: Default::default(),
            landlock_abi: None,
        });
        let out = render_jail(&i);
        for want in [
            "j: jail\n",
            "  user         uid 200001 gid 200001 (dynamic uid 200001 of the daemon's range)\n",
            "  groups       108\n",
            "  capabilities none\n",
            "  namespaces   pid, mount\n",
            "  root         /srv/r\\u{1b}[2J (read-only)\n",
            "  mount        bind /a -> /b (ro)\n",
            "  mount        tmpfs /tmp (1.0MiB)\n",
            "  device       /dev/kvm\n",
            "  seccomp      unconfined\n",
            "  landlock     auto, no ABI reported\n",
            "  no_new_privs true\n",
        ] {
            assert!(out.contains(want), "{want:?} in:\n{out}");
        }
        assert!(terminal_safe_lines(&out));
    }

    /// Every cell of `ps` starts (left-aligned) or ends (right-aligned) where its header
    /// does, with an ID longer than 24 characters and a paused state.
    #[test]
    fn ps_columns_stay_aligned() {
        let mut paused = info(
            "a-sandbox-with-a-long-id-0123",
            "sleep",
            vec!["9".into()],
            None,
        );
        paused.paused = true;
        let out = render_ps(&[info("web", "sleep", vec![], None), paused], 0);
        let lines: Vec<&str> = out.lines().collect();
        let h = lines[0];
        let at = |l: &str, word: &str| l.find(word).unwrap();
        for l in &lines[1..] {
            let cells: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(at(l, cells[1]), at(h, "LIFECYCLE"), "{out}");
            assert_eq!(at(l, cells[2]), at(h, "STATE"), "{out}");
            let pid_end = at(l, " 42 ") + 3;
            assert_eq!(pid_end, at(h, "PID") + 3, "{out}");
            assert_eq!(at(l, "  sleep"), at(h, "  COMMAND"), "{out}");
        }
        assert!(lines[2].contains(" running (paused) "), "{out}");
    }

    #[test]
    fn multibyte_commands_are_cut_on_character_boundaries() {
        // The command line that made `paddock ps` panic: a multi-byte character across
        // byte 37.
        let cmd = format!("{}é{}", "a".repeat(36), "ü".repeat(20));
        let line = command_line(&info("m", &cmd, vec![], None));
        assert_eq!(line.chars().count(), PS_COMMAND_WIDTH);
        assert!(line.ends_with("..."), "{line}");
        assert!(line.starts_with(&"a".repeat(36)), "{line}");
        assert_eq!(fit("日本語", 3), "日本語");
        assert_eq!(fit("日本語テキスト", 5), "日本...");
        assert_eq!(fit("abc", 0), "");
        assert_eq!(fit("abcdef", 2), "..");
    }

    #[test]
    fn terminal_controls_are_escaped() {
        let evil = "a\x1b]0;pwned\x07b\x1b[2Jc\u{9b}31md\re\nf\u{202e}g\u{7f}";
        let s = term_safe(evil);
        assert!(terminal_safe_lines(&s) && !s.contains('\n'), "{s:?}");
        assert_eq!(
            s,
            "a\\u{1b}]0;pwned\\u{7}b\\u{1b}[2Jc\\u{9b}31md\\re\\nf\\u{202e}g\\u{7f}"
        );
        assert!(matches!(term_safe("plain ünïcödé"), Cow::Borrowed(_)));
        let ps = render_ps(
            &[info("web", "sh", vec!["-c".into(), evil.into()], None)],
            0,
        );
        assert_eq!(ps.lines().count(), 2, "{ps}");
        assert!(terminal_safe_lines(&ps), "{ps:?}");
        // JSON output says the same thing, with the dangerous characters as \u escapes.
        let v = serde_json::json!({ "a": evil, "b": [evil] });
        for pretty in [false, true] {
            let j = safe_json(&v, pretty).unwrap();
            assert!(terminal_safe_lines(&j), "{j:?}");
            assert!(j.contains("\\u001b") && j.contains("\\u009b") && j.contains("\\u202e"));
            assert_eq!(serde_json::from_str::<Value>(&j).unwrap(), v);
        }
        assert_eq!(safe_json(&v, true).unwrap(), {
            let plain = serde_json::to_string_pretty(&v).unwrap();
            plain
                .replace('\u{9b}', "\\u009b")
                .replace('\u{202e}', "\\u202e")
                .replace('\u{7f}', "\\u007f")
        });
    }

    /// An event line starts with its seq; a `lagged` line says how many were missed.
    #[test]
    fn event_lines_show_the_seq_and_lags() {
        let data =
            r#"{"seq":42,"id":"web-1","lifecycle":"0123456789abcdef","at_ms":1,"type":"paused"}"#;
        assert_eq!(
            render_event(data, false),
            "42 web-1 0123456789abcdef paused \n"
        );
        let data = r#"{"seq":43,"id":"web-1","lifecycle":"0123456789abcdef","at_ms":1,"type":"oom","oom_kills":1,"oom_group_kills":0}"#;
        assert_eq!(
            render_event(data, false),
            "43 web-1 0123456789abcdef oom {\"oom_group_kills\":0,\"oom_kills\":1}\n"
        );
        assert!(render_event(r#"{"missed":7}"#, false).starts_with("- lagged: 7 events missed"));
    }

    proptest! {
        /// `ps` over arbitrary Unicode: no panic, one line per sandbox, nothing a terminal
        /// would act on, COMMAND at most 40 characters.
        #[test]
        fn ps_table_is_safe_for_any_text(
            rows in proptest::collection::vec((any::<String>(), any::<String>(), proptest::collection::vec(any::<String>(), 0..4)), 0..6),
            now in any::<u64>(),
        ) {
            let list: Vec<SandboxInfo> = rows
                .iter()
                .map(|(id, cmd, args)| info(id, cmd, args.clone(), None))
                .collect();
            let out = render_ps(&list, now);
            prop_assert!(terminal_safe_lines(&out), "{:?}", out);
            prop_assert_eq!(out.lines().count(), list.len() + 1);
            for (line, i) in out.lines().skip(1).zip(&list) {
                let cmd = command_line(i);
                prop_assert!(cmd.chars().count() <= PS_COMMAND_WIDTH);
                prop_assert!(line.ends_with(&cmd));
            }
        }

        /// `top` over arbitrary IDs and numbers.
        #[test]
        fn top_table_is_safe_for_any_text(
            ids in proptest::collection::vec(any::<String>(), 0..6),
            cpu in proptest::option::of(any::<f64>()),
            mem in proptest::option::of(any::<u64>()),
        ) {
            let rows: Vec<TopRow> = ids
                .iter()
                .map(|id| {
                    let stats: SandboxStats = serde_json::from_value(serde_json::json!({
                        "cpu_usage_usec": null, "cpu_user_usec": null, "cpu_system_usec": null,
                        "cpu_nr_throttled": null, "memory_current": mem, "memory_peak": mem,
                        "memory_oom_kill": null, "memory_high_events": null,
                        "memory_max_events": null, "pids_current": mem, "io_read_bytes": null,
                        "io_write_bytes": null, "processes": 3
                    }))
                    .unwrap();
                    (info(id, "x", vec![], None), stats, cpu)
                })
                .collect();
            let out = render_top(&rows);
            prop_assert!(terminal_safe_lines(&out), "{:?}", out);
            prop_assert_eq!(out.lines().count(), rows.len() + 1);
        }

        /// An event line (and its `--json` form) for arbitrary field values: one line,
        /// safe, and the JSON form decodes to the event.
        #[test]
        fn event_lines_are_safe_for_any_text(
            id in any::<String>(),
            ty in any::<String>(),
            error in any::<String>(),
            extra in any::<String>(),
        ) {
            let ev = serde_json::json!({
                "id": id, "lifecycle": "0123456789abcdef", "at_ms": 1, "type": ty,
                "error": error, extra: [error.clone()]
            });
            let data = ev.to_string();
            for json in [false, true] {
                let line = render_event(&data, json);
                prop_assert!(terminal_safe_lines(&line), "{:?}", line);
                prop_assert_eq!(line.matches('\n').count(), 1);
                prop_assert!(line.ends_with('\n'));
                if json {
                    prop_assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), ev.clone());
                }
            }
            // Not JSON at all (a daemon of another version, a proxy): still one safe line.
            let line = render_event(&id, false);
            prop_assert!(terminal_safe_lines(&line));
            prop_assert_eq!(line.matches('\n').count(), 1);
        }

        /// The stop report line for any ID.
        #[test]
        fn report_line_is_safe_for_any_text(id in any::<String>()) {
            let line = render_report(&id, &report());
            prop_assert!(terminal_safe_lines(&line), "{:?}", line);
            prop_assert_eq!(line.matches('\n').count(), 1);
        }

        /// `fit` never splits a character and never exceeds the width.
        #[test]
        fn fit_respects_width_and_boundaries(s in any::<String>(), width in 0usize..60) {
            let f = fit(&s, width);
            prop_assert!(f.chars().count() <= width);
            prop_assert!(terminal_safe_lines(&f) && !f.contains('\n'));
        }
    }
}
