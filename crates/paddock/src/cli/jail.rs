//! The jail flags of `paddock run` (Docker's and bubblewrap's habits) and the
//! [`JailSpec`] they build. Any jail flag makes a jail; none leaves the spec without one.
//! Parsing is pure and unit-tested; only `--seccomp FILE` reads a file.
//!
//! Over 600 lines with its tests (about 400 without): one test per flag next to its
//! parser.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use paddock_supervisor::jail::{
    FilesystemSpec, IdOrName, JailSpec, LandlockModeSpec, MountSpec, NamespaceKind, PrivilegesSpec,
    RlimitRange, RlimitsSpec, SeccompBuiltin, SeccompSpec, UserSpec,
};

/// Largest `--seccomp FILE` read (the API takes bodies up to 64 KiB anyway).
const MAX_SECCOMP_FILE: u64 = 1 << 20;

/// The jail flags (see `docs/jail.md`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JailArgs {
    /// Run as this user: UID[:GID] or NAME[:GROUP] (names are looked up in the rootfs's
    /// /etc/passwd and /etc/group with --rootfs, else the host's). Implies a jail.
    #[arg(
        long,
        value_name = "UID[:GID]|NAME[:GROUP]",
        conflicts_with = "dynamic_user",
        help_heading = "Jail"
    )]
    pub user: Option<String>,
    /// Run as a uid/gid of the daemon's --uid-range unique to this sandbox (systemd's
    /// DynamicUser=); needs the daemon (-d).
    #[arg(long, help_heading = "Jail")]
    pub dynamic_user: bool,
    /// A supplementary group, by number or name (repeatable).
    #[arg(long, value_name = "GROUP", help_heading = "Jail")]
    pub group_add: Vec<String>,
    /// A directory that becomes / (pivot_root in a new mount namespace).
    #[arg(long, value_name = "DIR", help_heading = "Jail")]
    pub rootfs: Option<PathBuf>,
    /// Make / read-only once the mounts are made.
    #[arg(long, help_heading = "Jail")]
    pub read_only: bool,
    /// Bind-mount SRC at DST (`:ro` read-only); repeatable. Binds are nosuid and nodev.
    #[arg(long, value_name = "SRC:DST[:ro]", help_heading = "Jail")]
    pub bind: Vec<String>,
    /// Bind-mount SRC at DST read-only; repeatable.
    #[arg(long, value_name = "SRC:DST", help_heading = "Jail")]
    pub ro_bind: Vec<String>,
    /// A tmpfs at DST, e.g. /tmp:size=64M,mode=1777; repeatable. Made before the binds.
    #[arg(
        long,
        value_name = "DST[:size=SIZE[,mode=OCTAL]]",
        help_heading = "Jail"
    )]
    pub tmpfs: Vec<String>,
    /// Expose a host character device at the same path, e.g. /dev/kvm; repeatable.
    #[arg(long, value_name = "PATH", help_heading = "Jail")]
    pub device: Vec<String>,
    /// New namespaces, comma-separated: pid,mount,ipc,uts,cgroup,user (the network is
    /// --netns).
    #[arg(long, value_name = "NS[,NS...]", help_heading = "Jail")]
    pub unshare: Vec<String>,
    /// The hostname (implies a uts namespace).
    #[arg(long, value_name = "NAME", help_heading = "Jail")]
    pub hostname: Option<String>,
    /// Keep a capability (uid 0 only); repeatable.
    #[arg(long, value_name = "CAP", help_heading = "Jail")]
    pub cap_add: Vec<String>,
    /// Drop a capability of the default set, or ALL; repeatable.
    #[arg(long, value_name = "CAP|ALL", help_heading = "Jail")]
    pub cap_drop: Vec<String>,
    /// Set no_new_privs (the default with any jail; this flag alone makes one).
    #[arg(long, conflicts_with = "allow_new_privs", help_heading = "Jail")]
    pub no_new_privs: bool,
    /// Do not set no_new_privs (setuid binaries work again).
    #[arg(long, help_heading = "Jail")]
    pub allow_new_privs: bool,
    /// A resource limit: NAME=SOFT[:HARD] (`unlimited` for either), e.g. nofile=1024:4096;
    /// repeatable.
    #[arg(long, value_name = "NAME=SOFT[:HARD]", help_heading = "Jail")]
    pub rlimit: Vec<String>,
    /// The seccomp filter: default, unconfined, or a FILE holding an OCI/Docker profile
    /// (JSON).
    #[arg(long, value_name = "default|unconfined|FILE", help_heading = "Jail")]
    pub seccomp: Option<String>,
    /// Landlock: auto (on with --rootfs where the kernel has it), off, required.
    #[arg(long, value_name = "auto|off|required", help_heading = "Jail")]
    pub landlock: Option<String>,
    /// A minimal init as pid 1 (the default with a pid namespace).
    #[arg(long, conflicts_with = "no_init", help_heading = "Jail")]
    pub init: bool,
    /// No init: the command is pid 1 of its pid namespace.
    #[arg(long, help_heading = "Jail")]
    pub no_init: bool,
}

impl JailArgs {
    /// Whether any jail flag was given.
    pub fn any(&self) -> bool {
        self.user.is_some()
            || self.dynamic_user
            || !self.group_add.is_empty()
            || self.rootfs.is_some()
            || self.read_only
            || !self.bind.is_empty()
            || !self.ro_bind.is_empty()
            || !self.tmpfs.is_empty()
            || !self.device.is_empty()
            || !self.unshare.is_empty()
            || self.hostname.is_some()
            || !self.cap_add.is_empty()
            || !self.cap_drop.is_empty()
            || self.no_new_privs
            || self.allow_new_privs
            || !self.rlimit.is_empty()
            || self.seccomp.is_some()
            || self.landlock.is_some()
            || self.init
            || self.no_init
    }

    /// The jail these flags ask for (`None` without any), validated as the daemon would.
    pub fn to_spec(&self) -> Result<Option<JailSpec>> {
        if !self.any() {
            return Ok(None);
        }
        let mut j = JailSpec::default();
        let groups: Vec<IdOrName> = self.group_add.iter().map(|g| id_or_name(g)).collect();
        if self.dynamic_user {
            j.user = Some(UserSpec {
                dynamic: true,
                groups,
                ..Default::default()
            });
        } else if self.user.is_some() || !groups.is_empty() {
            let (uid, gid) = match &self.user {
                Some(u) => parse_user(u)?,
                None => (None, None),
            };
            j.user = Some(UserSpec {
                uid,
                gid,
                groups,
                dynamic: false,
            });
        }
        j.privileges = PrivilegesSpec {
            no_new_privs: match (self.no_new_privs, self.allow_new_privs) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
        };
        if !self.rlimit.is_empty() {
            let mut list = Vec::new();
            for r in &self.rlimit {
                let (name, range) = parse_rlimit(r)?;
                list.push(paddock_supervisor::jail::NamedRlimit {
                    name,
                    soft: range.soft,
                    hard: range.hard,
                });
            }
            j.rlimits = RlimitsSpec::List(list);
        }
        for u in &self.unshare {
            for n in u.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let ns = parse_namespace(n)?;
                if !j.namespaces.contains(&ns) {
                    j.namespaces.push(ns);
                }
            }
        }
        j.hostname = self.hostname.clone();
        let mut mounts = Vec::new();
        for t in &self.tmpfs {
            mounts.push(parse_tmpfs(t)?);
        }
        let mut binds = Vec::new();
        for b in &self.bind {
            binds.push(parse_bind(b, false)?);
        }
        for b in &self.ro_bind {
            binds.push(parse_bind(b, true)?);
        }
        // Parents before children, whatever the order of the flags (a stable sort keeps
        // the given order among equals).
        binds.sort_by_key(|m| m.target().components().count());
        mounts.extend(binds);
        if self.rootfs.is_some() || self.read_only || !mounts.is_empty() || !self.device.is_empty()
        {
            j.filesystem = Some(FilesystemSpec {
                rootfs: self.rootfs.clone(),
                readonly: self.read_only,
                mounts,
                devices: self.device.iter().map(PathBuf::from).collect(),
                ..Default::default()
            });
        }
        if let Some(s) = &self.seccomp {
            j.seccomp = match s.as_str() {
                "default" => SeccompSpec::Builtin(SeccompBuiltin::Default),
                "unconfined" => SeccompSpec::Builtin(SeccompBuiltin::Unconfined),
                file => read_seccomp(Path::new(file))?,
            };
        }
        if let Some(l) = &self.landlock {
            j.landlock.mode = match l.as_str() {
                "auto" => LandlockModeSpec::Auto,
                "off" => LandlockModeSpec::Off,
                "required" => LandlockModeSpec::Required,
                other => bail!("--landlock {other:?}: expected auto, off or required"),
            };
        }
        j.init = match (self.init, self.no_init) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        j.validate()
            .map_err(|e| anyhow::anyhow!("{}", flag_for(&e)))?;
        Ok(Some(j))
    }
}

/// A spec error, with the flag that sets the field named first when there is one.
fn flag_for(e: &str) -> String {
    let flag = [
        ("jail.user.groups", "--group-add"),
        ("jail.user", "--user"),
        ("jail.privileges.cap_add", "--cap-add"),
        ("jail.privileges.cap_drop", "--cap-drop"),
        ("jail.rlimits", "--rlimit"),
        ("jail.namespaces", "--unshare"),
        ("jail.hostname", "--hostname"),
        ("jail.filesystem.rootfs", "--rootfs"),
        ("jail.filesystem.mounts", "--bind/--ro-bind/--tmpfs"),
        ("jail.filesystem.devices", "--device"),
        ("jail.seccomp", "--seccomp"),
        ("jail.init", "--init"),
    ]
    .iter()
    .find(|(field, _)| e.starts_with(field))
    .map(|(_, f)| *f);
    match flag {
        Some(f) => format!("{f}: {e}"),
        None => e.to_owned(),
    }
}

fn id_or_name(s: &str) -> IdOrName {
    match s.parse::<u32>() {
        Ok(n) => IdOrName::Id(n),
        Err(_) => IdOrName::Name(s.to_owned()),
    }
}

/// `UID[:GID]` or `NAME[:GROUP]`.
fn parse_user(s: &str) -> Result<(Option<IdOrName>, Option<IdOrName>)> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        bail!("--user {s:?}: expected UID[:GID] or NAME[:GROUP]");
    }
    Ok((Some(id_or_name(u)), g.map(id_or_name)))
}

fn parse_namespace(n: &str) -> Result<NamespaceKind> {
    Ok(match n {
        "pid" => NamespaceKind::Pid,
        "mount" | "mnt" => NamespaceKind::Mount,
        "ipc" => NamespaceKind::Ipc,
        "uts" => NamespaceKind::Uts,
        "cgroup" => NamespaceKind::Cgroup,
        "user" => NamespaceKind::User,
        "net" | "network" => {
            bail!("--unshare net: the network namespace is --netns isolated|NAME")
        }
        other => bail!("--unshare {other:?}: expected pid, mount, ipc, uts, cgroup or user"),
    })
}

/// `NAME=SOFT[:HARD]`.
fn parse_rlimit(s: &str) -> Result<(String, RlimitRange)> {
    let bad =
        || anyhow::anyhow!("--rlimit {s:?}: expected NAME=SOFT[:HARD], e.g. nofile=1024:4096");
    let (name, vals) = s.split_once('=').ok_or_else(bad)?;
    let value = |v: &str| -> Result<paddock_supervisor::jail::LimitValue> {
        use paddock_supervisor::jail::{LimitValue, UnlimitedWord};
        match v {
            "unlimited" | "infinity" => Ok(LimitValue::Word(UnlimitedWord::Unlimited)),
            n => n.parse().map(LimitValue::Value).map_err(|_| bad()),
        }
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((s, h)) => (value(s)?, Some(value(h)?)),
        None => (value(vals)?, None),
    };
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_owned(), RlimitRange { soft, hard }))
}

/// `SRC:DST[:ro]` (`--ro-bind SRC:DST`).
fn parse_bind(s: &str, ro_flag: bool) -> Result<MountSpec> {
    let flag = if ro_flag { "--ro-bind" } else { "--bind" };
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [src, dst] => (*src, *dst, ro_flag),
        [src, dst, "ro"] if !ro_flag => (*src, *dst, true),
        [src, dst, "rw"] if !ro_flag => (*src, *dst, false),
        _ => bail!(
            "{flag} {s:?}: expected SRC:DST{}",
            if ro_flag { "" } else { "[:ro]" }
        ),
    };
    if src.is_empty() || dst.is_empty() {
        bail!("{flag} {s:?}: SRC and DST must not be empty");
    }
    Ok(MountSpec::Bind {
        source: src.into(),
        target: dst.into(),
        readonly: ro,
        nosuid: true,
        nodev: true,
        noexec: false,
    })
}

/// `DST[:size=SIZE[,mode=OCTAL]]`.
fn parse_tmpfs(s: &str) -> Result<MountSpec> {
    let (dst, opts) = match s.split_once(':') {
        Some((d, o)) => (d, Some(o)),
        None => (s, None),
    };
    if dst.is_empty() {
        bail!("--tmpfs {s:?}: expected DST[:size=SIZE[,mode=OCTAL]]");
    }
    let (mut size, mut mode) = (None, 0o755);
    for o in opts.into_iter().flat_map(|o| o.split(',')) {
        match o.split_once('=') {
            Some(("size", v)) => {
                size = Some(
                    paddock_supervisor::parse_size(v)
                        .map_err(|e| anyhow::anyhow!("--tmpfs {s:?}: {e}"))?,
                )
            }
            Some(("mode", v)) => {
                mode = u32::from_str_radix(v, 8)
                    .map_err(|_| anyhow::anyhow!("--tmpfs {s:?}: mode {v:?} is not octal"))?
            }
            _ => bail!("--tmpfs {s:?}: unknown option {o:?} (size=SIZE, mode=OCTAL)"),
        }
    }
    Ok(MountSpec::Tmpfs {
        target: dst.into(),
        size,
        mode,
    })
}

/// An OCI/Docker seccomp profile from a file, as the JSON object the API takes.
fn read_seccomp(path: &Path) -> Result<SeccompSpec> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| {
        format!(
            "--seccomp {}: expected default, unconfined or a profile file",
            path.display()
        )
    })?;
    let mut text = String::new();
    f.take(MAX_SECCOMP_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("--seccomp {}: read", path.display()))?;
    if text.len() as u64 > MAX_SECCOMP_FILE {
        bail!(
            "--seccomp {}: larger than {MAX_SECCOMP_FILE} bytes",
            path.display()
        );
    }
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(o)) => Ok(SeccompSpec::Oci(o)),
        Ok(_) => bail!(
            "--seccomp {}: not a JSON object (an OCI linux.seccomp profile)",
            path.display()
        ),
        Err(e) => bail!("--seccomp {}: not JSON: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        j: JailArgs,
    }

    fn parse(args: &[&str]) -> Result<Option<JailSpec>> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))?;
        t.j.to_spec()
    }

    fn err(args: &[&str]) -> String {
        format!("{:#}", parse(args).unwrap_err())
    }

    #[test]
    fn no_flag_no_jail_and_any_flag_a_jail() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(
            parse(&["--no-new-privs"])
                .unwrap()
                .unwrap()
                .privileges
                .no_new_privs,
            Some(true)
        );
        assert_eq!(
            parse(&["--seccomp", "unconfined"])
                .unwrap()
                .unwrap()
                .seccomp,
            SeccompSpec::Builtin(SeccompBuiltin::Unconfined)
        );
    }

    #[test]
    fn flags_build_the_spec() {
        let j = parse(&[
            "--user",
            "app:kvm",
            "--group-add",
            "44",
            "--group-add",
            "video",
            "--rootfs",
            "/srv/r",
            "--read-only",
            "--bind",
            "/data:/data/in:ro",
            "--ro-bind",
            "/k:/boot",
            "--bind",
            "/a:/data",
            "--tmpfs",
            "/tmp:size=64M,mode=1777",
            "--device",
            "/dev/kvm",
            "--unshare",
            "pid,mount",
            "--unshare",
            "ipc,uts,pid",
            "--hostname",
            "vm-1",
            "--cap-drop",
            "ALL",
            "--rlimit",
            "nofile=1024:4096",
            "--rlimit",
            "core=0",
            "--rlimit",
            "stack=unlimited",
            "--landlock",
            "required",
            "--no-init",
        ])
        .unwrap()
        .unwrap();
        let u = j.user.clone().unwrap();
        assert_eq!(u.uid, Some(IdOrName::Name("app".into())));
        assert_eq!(u.gid, Some(IdOrName::Name("kvm".into())));
        assert_eq!(
            u.groups,
            vec![IdOrName::Id(44), IdOrName::Name("video".into())]
        );
        assert_eq!(
            j.namespaces,
            vec![
                NamespaceKind::Pid,
                NamespaceKind::Mount,
                NamespaceKind::Ipc,
                NamespaceKind::Uts
            ]
        );
        let fs = j.filesystem.clone().unwrap();
        assert_eq!(fs.rootfs, Some("/srv/r".into()));
        assert!(fs.readonly);
        let targets: Vec<String> = fs
            .mounts
            .iter()
            .map(|m| m.target().display().to_string())
            .collect();
        assert_eq!(
            targets,
            ["/tmp", "/data", "/boot", "/data/in"],
            "tmpfs first, then binds parents first (--bind before --ro-bind among equals)"
        );
        assert!(
            matches!(&fs.mounts[0], MountSpec::Tmpfs { size: Some(s), mode: 0o1777, .. } if *s == 64 << 20)
        );
        assert!(matches!(
            &fs.mounts[1],
            MountSpec::Bind {
                readonly: false,
                ..
            }
        ));
        assert!(matches!(
            &fs.mounts[2],
            MountSpec::Bind { readonly: true, .. }
        ));
        assert!(matches!(
            &fs.mounts[3],
            MountSpec::Bind { readonly: true, .. }
        ));
        assert_eq!(fs.devices, vec![PathBuf::from("/dev/kvm")]);
        let rl = j.rlimits.entries();
        assert_eq!(
            rl.iter().map(|(n, r)| (*n, r.raw())).collect::<Vec<_>>(),
            [
                ("nofile", (1024, 4096)),
                ("core", (0, 0)),
                ("stack", (u64::MAX, u64::MAX))
            ]
        );
        assert_eq!(j.landlock.mode, LandlockModeSpec::Required);
        assert_eq!(j.init, Some(false));
        assert_eq!(j.hostname.as_deref(), Some("vm-1"));
        let d = parse(&["--dynamic-user", "--group-add", "kvm"])
            .unwrap()
            .unwrap();
        assert!(d.user.as_ref().unwrap().dynamic);
        let n = parse(&["--user", "1000:1000"]).unwrap().unwrap();
        assert_eq!(n.user.unwrap().uid, Some(IdOrName::Id(1000)));
    }

    #[test]
    fn a_seccomp_file_is_sent_as_the_object() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("p.json");
        std::fs::write(&p, r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"}]}"#).unwrap();
        let j = parse(&["--seccomp", p.to_str().unwrap()]).unwrap().unwrap();
        assert!(
            matches!(&j.seccomp, SeccompSpec::Oci(o) if o["defaultAction"] == "SCMP_ACT_ALLOW")
        );
        std::fs::write(&p, "[1]").unwrap();
        assert!(err(&["--seccomp", p.to_str().unwrap()]).contains("not a JSON object"));
        std::fs::write(&p, r#"{"syscalls": []}"#).unwrap();
        assert!(
            err(&["--seccomp", p.to_str().unwrap()])
                .starts_with("--seccomp: jail.seccomp.defaultAction")
        );
        assert!(
            err(&["--seccomp", "/nonexistent/profile.json"])
                .contains("expected default, unconfined or a profile file")
        );
    }

    /// Bad flags are refused with an error naming the flag.
    #[test]
    fn bad_flags_are_clear_errors() {
        for (args, want) in [
            (&["--user", ""][..], "--user \"\": expected UID[:GID]"),
            (&["--user", "1000:"], "--user \"1000:\""),
            (&["--bind", "/a"], "--bind \"/a\": expected SRC:DST[:ro]"),
            (&["--bind", "/a:/b:rx"], "--bind \"/a:/b:rx\""),
            (
                &["--ro-bind", "/a:/b:ro"],
                "--ro-bind \"/a:/b:ro\": expected SRC:DST",
            ),
            (
                &["--bind", "a:/b"],
                "--bind/--ro-bind/--tmpfs: jail.filesystem.mounts[0].source: a must be an absolute path",
            ),
            (
                &["--bind", "/a:/"],
                "--bind/--ro-bind/--tmpfs: jail.filesystem.mounts[0].target: / must not be `/`",
            ),
            (&["--tmpfs", "/t:size=lots"], "--tmpfs \"/t:size=lots\": "),
            (
                &["--tmpfs", "/t:mode=999"],
                "--tmpfs \"/t:mode=999\": mode \"999\" is not octal",
            ),
            (
                &["--tmpfs", "/t:uid=5"],
                "--tmpfs \"/t:uid=5\": unknown option",
            ),
            (
                &["--unshare", "pid,net"],
                "--unshare net: the network namespace is --netns",
            ),
            (&["--unshare", "time"], "--unshare \"time\""),
            (
                &["--unshare", "user"],
                "--unshare: jail.namespaces: user needs jail.user_ns",
            ),
            (&["--hostname", "a_b"], "--hostname: jail.hostname"),
            (
                &["--cap-add", "FLY"],
                "--cap-add: jail.privileges.cap_add[0]: unknown capability",
            ),
            (
                &["--user", "1000", "--cap-add", "NET_ADMIN"],
                "--cap-add: jail.privileges.cap_add: the program runs as uid 1000",
            ),
            (
                &["--cap-drop", "nope"],
                "--cap-drop: jail.privileges.cap_drop[0]",
            ),
            (
                &["--rlimit", "nofile"],
                "--rlimit \"nofile\": expected NAME=SOFT[:HARD]",
            ),
            (&["--rlimit", "nofile=x"], "--rlimit \"nofile=x\""),
            (
                &["--rlimit", "nofile=10:5"],
                "--rlimit: jail.rlimits[0]: rlimit nofile: soft limit 10 above hard limit 5",
            ),
            (
                &["--rlimit", "files=10"],
                "--rlimit: jail.rlimits[0]: unknown rlimit",
            ),
            (
                &["--landlock", "maybe"],
                "--landlock \"maybe\": expected auto, off or required",
            ),
            (&["--init"], "--init: jail.init: needs a pid namespace"),
            (
                &["--device", "/etc/passwd"],
                "--device: jail.filesystem.devices[0]: /etc/passwd is not under /dev",
            ),
            (
                &["--rootfs", "rel"],
                "--rootfs: jail.filesystem.rootfs: rel must be an absolute path",
            ),
        ] {
            let e = err(args);
            assert!(e.starts_with(want), "{args:?}:\n  got  {e}\n  want {want}…");
        }
        // Contradictions are clap's usage errors.
        for args in [
            &["--user", "1", "--dynamic-user"][..],
            &["--init", "--no-init"],
            &["--no-new-privs", "--allow-new-privs"],
        ] {
            assert!(
                T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).is_err(),
                "{args:?}"
            );
        }
    }
}
