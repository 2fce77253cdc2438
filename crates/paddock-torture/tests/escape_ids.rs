//! Sandbox IDs and cgroup names built to escape the managed root: `..`, `/`, NUL, very
//! long names, unicode look-alikes, names of cgroup interface files. Each is either
//! rejected, or starting a sandbox with it creates its cgroup directly under the root.

use paddock_cgroup::{CgroupName, Root};
use paddock_supervisor::{Config, SandboxId, Supervisor};
use proptest::prelude::*;

/// Pieces an escaping name is built from.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("/".to_string()),
        Just("\0".to_string()),
        Just("\u{2215}".to_string()), // ∕ DIVISION SLASH
        Just("\u{2044}".to_string()), // ⁄ FRACTION SLASH
        Just("\u{FF0F}".to_string()), // ／ FULLWIDTH SOLIDUS
        Just("\u{FF0E}".to_string()), // ． FULLWIDTH FULL STOP
        Just("\u{2024}".to_string()), // ․ ONE DOT LEADER
        Just("\u{202E}".to_string()), // RIGHT-TO-LEFT OVERRIDE
        Just("\u{200B}".to_string()), // ZERO WIDTH SPACE
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just("@".to_string()),
        Just("cgroup.procs".to_string()),
        Just("cgroup.kill".to_string()),
        Just("cgroup.subtree_control".to_string()),
        Just("memory.max".to_string()),
        Just("pids.max".to_string()),
        Just("cpu.max".to_string()),
        Just("notify_on_release".to_string()),
        Just("tasks".to_string()),
        Just("release_agent".to_string()),
        "[a-z0-9_-]{1,12}",
        "\\PC{1,6}",
        Just("a".repeat(120)),
    ]
}

fn candidate() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(piece(), 1..6).prop_map(|v| v.concat()),
        ".{0,300}",
        "[a-z]{120,140}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Pure validation: whatever is accepted is one safe path component.
    #[test]
    fn accepted_names_are_single_safe_components(s in candidate()) {
        if let Ok(id) = SandboxId::new(s.clone()) {
            let s = id.as_str();
            prop_assert!(!s.is_empty() && s.len() <= paddock_supervisor::MAX_ID_LEN);
            prop_assert!(!s.contains('/') && !s.contains('\0'));
            prop_assert!(s != "." && s != "..");
            prop_assert!(!s.starts_with("cgroup.") && !s.starts_with("memory."));
            prop_assert!(!s.chars().any(char::is_control));
            let p = std::path::Path::new("/r").join(s);
            prop_assert_eq!(p.parent(), Some(std::path::Path::new("/r")));
            // A valid sandbox ID makes a valid cgroup name with any lifecycle.
            let lc = paddock_supervisor::LifecycleId::fresh();
            prop_assert!(CgroupName::new(paddock_supervisor::cgroup_name(s, lc)).is_ok());
        }
        if let Ok(n) = CgroupName::new(s.clone()) {
            let p = std::path::Path::new("/r").join(n.as_str());
            prop_assert_eq!(p.parent(), Some(std::path::Path::new("/r")));
            prop_assert_eq!(p.components().count(), 3);
        }
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    sup: Supervisor,
    // Dropped last: kills and removes everything under the test's cgroup.
    _t: paddock_testutil::TestRoot,
}

fn fixture(test: &str) -> Option<Fixture> {
    let t = paddock_testutil::test_root(test)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = Root::open_or_create(&t.path().join("root")).unwrap();
    let sup = rt.block_on(async { Supervisor::new(Config::new(root)).unwrap() });
    Some(Fixture { rt, sup, _t: t })
}

/// With real cgroups: an accepted ID's sandbox gets exactly one new cgroup, directly under
/// the root, and the stop removes it; nothing appears anywhere else under the test's
/// cgroup.
#[test]
fn escaping_ids_create_cgroups_only_under_the_root() {
    let Some(f) = fixture("escaping_ids_create_cgroups_only_under_the_root") else {
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        ..ProptestConfig::default()
    });
    let accepted = std::cell::Cell::new(0u32);
    let result = runner.run(&candidate(), |s| {
        let r =
            f.rt.block_on(paddock_torture::check_id_containment(&f.sup, &s));
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        accepted.set(accepted.get() + u32::from(r == Ok(true)));
        let test_dir = f.sup.root().path().parent().unwrap().to_path_buf();
        let others: Vec<_> = paddock_torture::check::subdirs(&test_dir)
            .into_iter()
            .filter(|p| !p.starts_with(f.sup.root().path()))
            .collect();
        prop_assert!(others.is_empty(), "{:?}", others);
        prop_assert!(paddock_torture::check::subdirs(f.sup.root().path()).is_empty());
        Ok(())
    });
    eprintln!(
        "escaping IDs: {} accepted and contained, the rest rejected",
        accepted.get()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Named look-alikes and interface-file names, one by one (not left to chance).
#[test]
fn named_escapes() {
    for bad in [
        "..",
        ".",
        "a/b",
        "../x",
        "x\0",
        "cgroup.procs",
        "cgroup.kill",
        "memory.max",
        "pids.max",
        "",
    ] {
        assert!(SandboxId::new(bad).is_err(), "{bad:?} accepted");
    }
    assert!(SandboxId::new("a".repeat(129)).is_err());
    // Look-alikes are ordinary characters: accepted, and each is one component.
    for ok in [
        "\u{2215}\u{2215}",
        "\u{FF0E}\u{FF0E}",
        "\u{FF0E}",
        "a\u{2215}b",
        "tasks",
        "release_agent",
    ] {
        let id = SandboxId::new(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        assert_eq!(
            std::path::Path::new("/r")
                .join(id.as_str())
                .components()
                .count(),
            3
        );
    }
    let Some(f) = fixture("named_escapes") else {
        return;
    };
    for ok in [
        "\u{2215}..",
        "\u{FF0E}\u{FF0E}",
        "tasks",
        "notify_on_release",
        "a@b",
    ] {
        let r =
            f.rt.block_on(paddock_torture::check_id_containment(&f.sup, ok));
        assert!(matches!(r, Ok(true)), "{ok:?}: {r:?}");
    }
}
