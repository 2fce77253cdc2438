//! What each part of a jail adds to a library lifecycle (start, the main process's exit,
//! the stop it triggers, forget) of `/bin/true`: the jail is built up one part at a time
//! and every variant is run interleaved with the others, so each median is measured under
//! the same conditions. A profile aid; `paddock-bench --scenario jailed-lifecycle` is the
//! benchmark of record.
//!
//! `cargo run --release -p paddock-supervisor --example jail_breakdown [N]` (as root, with
//! a static busybox at /bin/busybox: `apt-get install busybox-static`);
//! `JAIL_BREAKDOWN_ONLY=TEXT` runs only the variants whose name contains TEXT (ratios are
//! then to the first of them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paddock_cgroup::Root;
use paddock_supervisor::jail::{
    FilesystemSpec, JailSpec, LandlockModeSpec, LandlockSpec, NamespaceKind, SeccompBuiltin,
    SeccompSpec, UserSpec,
};
use paddock_supervisor::{Config, SandboxId, SandboxSpec, Supervisor, UidRange};

/// One variant: its name and the jail it runs `/bin/true` in.
type Variant = (&'static str, Option<JailSpec>);

fn variants(rootfs: &Path) -> Vec<Variant> {
    let bare = || JailSpec {
        seccomp: SeccompSpec::Builtin(SeccompBuiltin::Unconfined),
        landlock: LandlockSpec {
            mode: LandlockModeSpec::Off,
            ..Default::default()
        },
        ..Default::default()
    };
    let dynamic = || UserSpec {
        dynamic: true,
        ..Default::default()
    };
    let fs = |minimal: bool| FilesystemSpec {
        rootfs: Some(rootfs.to_owned()),
        minimal_dev: Some(minimal),
        masked_paths: (!minimal).then(Vec::new),
        ..Default::default()
    };
    let ns = |k: &[NamespaceKind]| k.to_vec();
    use NamespaceKind::*;
    let full = JailSpec {
        user: Some(dynamic()),
        namespaces: ns(&[Pid, Mount, Ipc, Uts]),
        filesystem: Some(fs(true)),
        ..Default::default()
    };
    vec![
        ("no jail", None),
        ("empty jail (no_new_privs)", Some(bare())),
        (
            "dynamic user",
            Some(JailSpec {
                user: Some(dynamic()),
                ..bare()
            }),
        ),
        (
            "+ seccomp default",
            Some(JailSpec {
                user: Some(dynamic()),
                seccomp: SeccompSpec::default(),
                ..bare()
            }),
        ),
        (
            "+ landlock auto",
            Some(JailSpec {
                user: Some(dynamic()),
                seccomp: SeccompSpec::default(),
                landlock: LandlockSpec::default(),
                ..bare()
            }),
        ),
        (
            "ipc+uts ns (caller's uid)",
            Some(JailSpec {
                namespaces: ns(&[Ipc, Uts]),
                ..bare()
            }),
        ),
        (
            "pid ns + init (caller's uid)",
            Some(JailSpec {
                namespaces: ns(&[Pid]),
                ..bare()
            }),
        ),
        (
            "pid ns, no init (caller's uid)",
            Some(JailSpec {
                namespaces: ns(&[Pid]),
                init: Some(false),
                ..bare()
            }),
        ),
        (
            "mnt ns + rootfs, bare (caller's uid)",
            Some(JailSpec {
                namespaces: ns(&[Mount]),
                filesystem: Some(fs(false)),
                ..bare()
            }),
        ),
        (
            "mnt ns + rootfs, /dev + masks",
            Some(JailSpec {
                namespaces: ns(&[Mount]),
                filesystem: Some(fs(true)),
                ..bare()
            }),
        ),
        ("the bench's jail", Some(full.clone())),
        (
            "the bench's jail, no init",
            Some(JailSpec {
                init: Some(false),
                ..full
            }),
        ),
    ]
}

fn rootfs() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("paddock-jail-breakdown.{}", std::process::id()));
    for d in ["bin", "proc", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir in the rootfs");
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("copy /bin/busybox (apt-get install busybox-static)");
    std::os::unix::fs::symlink("busybox", dir.join("bin/true")).expect("symlink bin/true");
    dir
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let fsroot = rootfs();
    let root = Root::open_or_create(Path::new("paddock-jail-breakdown")).expect("root");
    let mut cfg = Config::new(root.clone());
    cfg.dynamic_uids = Some(UidRange {
        first: 271_000,
        last: 271_999,
    });
    let sup = Supervisor::new(cfg).expect("supervisor");
    // `JAIL_BREAKDOWN_ONLY=text`: only the variants whose name contains it (for a profile).
    let only = std::env::var("JAIL_BREAKDOWN_ONLY").unwrap_or_default();
    let vs: Vec<Variant> = variants(&fsroot)
        .into_iter()
        .filter(|(name, _)| name.contains(only.as_str()))
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); vs.len()];
    let mut starts: Vec<Vec<Duration>> = vec![Vec::new(); vs.len()];
    let mut seq = 0u64;
    for round in 0..n + 5 {
        for (i, (name, jail)) in vs.iter().enumerate() {
            seq += 1;
            let id = SandboxId::new(format!("b{seq}")).unwrap();
            let mut spec = SandboxSpec::new(id.clone(), "/bin/true", Vec::<String>::new());
            spec.jail = jail.clone();
            let sup2 = sup.clone();
            let dt = tokio::spawn(async move {
                let t0 = Instant::now();
                let st = sup2.start(spec).await?;
                let started = t0.elapsed();
                let r = sup2.wait_stopped(&id, Some(st.info.lifecycle)).await?;
                sup2.forget(&id)?;
                Ok::<_, paddock_supervisor::Error>((t0.elapsed(), r, started))
            })
            .await
            .expect("lifecycle task")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(dt.1.error.is_none(), "{name}: {:?}", dt.1);
            if round >= 5 {
                times[i].push(dt.0);
                starts[i].push(dt.2);
            }
        }
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 9 / 10])
    };
    let Some(first) = times.first() else {
        eprintln!("no variant matches JAIL_BREAKDOWN_ONLY={only:?}");
        std::process::exit(2);
    };
    let (base, _) = med(&mut first.clone());
    println!(
        "{n} lifecycles per variant, interleaved; median (p90), ratio to no jail; median of the start alone"
    );
    for (((name, _), t), s) in vs.iter().zip(times.iter_mut()).zip(starts.iter_mut()) {
        let (m, p90) = med(t);
        let (sm, _) = med(s);
        println!(
            "{name:40} {:8.0} us ({:8.0}) {:5.2}x   start {:8.0} us",
            m.as_secs_f64() * 1e6,
            p90.as_secs_f64() * 1e6,
            m.as_secs_f64() / base.as_secs_f64(),
            sm.as_secs_f64() * 1e6
        );
    }
    let _ = std::fs::remove_dir(root.path());
    let _ = std::fs::remove_dir_all(&fsroot);
}
