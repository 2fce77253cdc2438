//! A real microVM payload (examples/microvm): QEMU `-M microvm` booting the VM harness's
//! kernel (Debian's cloud kernel) with a busybox initramfs, in a jailed sandbox of a daemon —
//! a dynamic user, a rootfs of read-only binds, pid and mount namespaces, the default
//! seccomp profile. The spec is the example's own (`examples/microvm/run.sh spec ID`), so
//! the example cannot rot without this test failing.
//!
//! The test waits for the guest's boot marker in the sandbox log (the guest's console is
//! QEMU's stdout), checks the VMM really runs jailed (its uid is the dynamic one, seccomp
//! and `no_new_privs` are on, its pid namespace is not ours), stops the sandbox gracefully
//! (QEMU exits 0 on SIGTERM, which the jail's init forwards) and requires that nothing had
//! to be killed and nothing is left.
//!
//! TCG by default (KVM hangs on the CI machines, see examples/microvm/README.md);
//! `PADDOCK_MICROVM_ACCEL=kvm` boots under KVM with `/dev/kvm` in the jail. Needs
//! qemu-system-x86_64, a `/boot/vmlinuz-*-cloud-amd64` kernel, a static busybox, cpio, gzip
//! and jq (`vm/install-deps`, which `.ci/run` calls before the tests); skips with the reason
//! otherwise (a failure under `PADDOCK_TEST_REQUIRE=1`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The example's directory.
fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/microvm")
}

/// What the guest's init prints on the console once it runs.
const MARKER: &str = "PADDOCK-MICROVM-BOOTED";
/// The daemon's dynamic uids for this test (apart from the other tests' ranges).
const FIRST_UID: u32 = 300_400;
const RANGE: &str = "300400-300409";
/// The longest a boot may take: TCG on a loaded 2-core machine (measured: 2-4 s idle).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why this host cannot run the test, if it cannot.
fn missing_tools() -> Option<String> {
    let on_path = |t: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
    };
    for t in ["qemu-system-x86_64", "cpio", "gzip", "jq"] {
        if !on_path(t) {
            return Some(format!("{t} not found (run vm/install-deps)"));
        }
    }
    if !Path::new("/usr/bin/qemu-system-x86_64").is_file() {
        return Some("no /usr/bin/qemu-system-x86_64 (the example binds /usr)".into());
    }
    let kernel = std::fs::read_dir("/boot").ok().and_then(|rd| {
        rd.flatten().find(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64")
        })
    });
    if kernel.is_none() {
        return Some("no /boot/vmlinuz-*-cloud-amd64 (run vm/install-deps)".into());
    }
    if !on_path("busybox") && !Path::new("/bin/busybox").is_file() {
        return Some("no busybox (busybox-static; run vm/install-deps)".into());
    }
    None
}

/// `examples/microvm/run.sh --dir DIR spec ID`: prepares the guest and the rootfs in DIR and
/// returns the spec the example posts.
fn example_spec(dir: &Path, id: &str, kvm: bool, net: bool) -> Value {
    let mut cmd = Command::new(example_dir().join("run.sh"));
    if kvm {
        cmd.arg("--kvm");
    }
    if net {
        cmd.arg("--net");
    }
    cmd.arg("--dir").arg(dir).args(["spec", id]);
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "run.sh spec failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "run.sh spec printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A field of `/proc/<pid>/status` (`Uid`, `Seccomp`, `NoNewPrivs`).
fn status_field(pid: i32, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Whether a VM can boot here; if not, says why (a skip, or a note inside the test VM).
fn can_boot(test: &str) -> bool {
    if std::env::var_os("PADDOCK_VM").is_some() {
        // vm/run-tests's guest has no QEMU (and nested TCG would be slow): not a CI skip.
        paddock_testutil::note_skip(test, "inside the test VM (vm/run-tests)");
        return false;
    }
    if let Some(why) = missing_tools() {
        paddock_testutil::skip(test, &why);
        return false;
    }
    true
}

#[test]
fn a_jailed_qemu_microvm_boots_and_stops_gracefully() {
    let test = "microvm_boots_and_stops";
    let Some(w) = world(test) else {
        return;
    };
    if !can_boot(test) {
        return;
    }
    let kvm = std::env::var("PADDOCK_MICROVM_ACCEL").is_ok_and(|a| a == "kvm");
    let started = Instant::now();
    let spec = example_spec(&w.tmp.path().join("microvm"), "vm-1", kvm, false);
    let prepared = started.elapsed();
    // The example's spec is the jail the issue asks for; say so before relying on it.
    let jail = &spec["jail"];
    assert_eq!(jail["user"]["dynamic"], true, "{spec}");
    assert_eq!(jail["namespaces"], json!(["pid", "mount"]), "{spec}");
    assert_eq!(jail["seccomp"], "default", "{spec}");
    assert_eq!(jail["filesystem"]["readonly"], true, "{spec}");
    let mounts = jail["filesystem"]["mounts"].as_array().unwrap();
    assert!(
        mounts.iter().all(|m| m["readonly"] == true),
        "every bind is read-only: {spec}"
    );

    let _d = w.daemon(&["--uid-range", RANGE]);
    let body = serde_json::to_vec(&spec).unwrap();
    let t0 = Instant::now();
    let r = w.hyper("POST", "/v1/sandboxes", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    let info = r.json();
    let uid = info["jail"]["dynamic_uid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no dynamic uid: {info}"));
    assert_eq!(uid, u64::from(FIRST_UID), "{info}");

    let log = wait_for(BOOT_TIMEOUT, "the guest's boot marker in the log", || {
        let t = w.hyper("GET", "/v1/sandboxes/vm-1/logs", None).text();
        t.contains(MARKER).then_some(t)
    });
    let boot = t0.elapsed();
    let marker_line = log.lines().find(|l| l.contains(MARKER)).unwrap().trim_end();
    eprintln!(
        "microvm ({}): prepared in {prepared:.2?}, booted in {boot:.2?}: {marker_line}",
        if kvm { "kvm" } else { "tcg" }
    );

    // The VMM runs jailed: as the dynamic user, with seccomp and no_new_privs, in a pid
    // namespace of its own (the jail's init is its parent there).
    let procs = w.procs_in_subtree();
    let qemu = procs
        .iter()
        .copied()
        .find(|&p| comm(p).starts_with("qemu-system"))
        .unwrap_or_else(|| {
            let names: Vec<_> = procs.iter().map(|&p| (p, comm(p))).collect();
            panic!("no qemu process in the sandbox: {names:?}")
        });
    let uids = status_field(qemu, "Uid").unwrap();
    assert!(
        uids.split_whitespace().all(|u| u == uid.to_string()),
        "qemu's uids {uids:?}, expected {uid}"
    );
    assert_eq!(status_field(qemu, "Seccomp").as_deref(), Some("2"));
    assert_eq!(status_field(qemu, "NoNewPrivs").as_deref(), Some("1"));
    assert_eq!(
        status_field(qemu, "CapEff").as_deref(),
        Some("0000000000000000")
    );
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_ne!(
        ns(&qemu.to_string()),
        ns("self"),
        "qemu is in our pid namespace"
    );

    // A graceful stop: SIGTERM reaches QEMU (through the jail's init), QEMU exits 0 within
    // the grace period, nothing is killed.
    let t1 = Instant::now();
    let stop = w.hyper("POST", "/v1/sandboxes/vm-1/stop?timeout=30s", None);
    let stop_wall = t1.elapsed();
    assert_eq!(stop.status, 200, "{}", stop.text());
    let report = stop.json();
    assert_eq!(report["reason"], "requested", "{report}");
    assert_eq!(report["killed_after_grace"], 0, "{report}");
    assert_eq!(report["killed"], json!([]), "{report}");
    assert_eq!(report["stuck"], json!([]), "{report}");
    assert_eq!(report["error"], Value::Null, "{report}");
    let info = w.hyper("GET", "/v1/sandboxes/vm-1", None).json();
    assert_eq!(info["state"], "stopped", "{info}");
    assert_eq!(info["main_exit"]["code"], 0, "{info}");
    assert_eq!(info["main_exit"]["signal"], Value::Null, "{info}");
    let log = w.hyper("GET", "/v1/sandboxes/vm-1/logs", None).text();
    assert!(
        log.contains("terminating on signal 15"),
        "QEMU did not report the SIGTERM:\n{log}"
    );
    eprintln!(
        "microvm: stop {stop_wall:.2?} (report total_ms {}), whole test {:.2?}",
        report["total_ms"],
        started.elapsed()
    );

    assert_eq!(w.hyper("DELETE", "/v1/sandboxes/vm-1", None).status, 204);
    w.assert_no_leaks();
    assert!(
        live_procs_with_cgroup()
            .iter()
            .all(|&(p, _)| status_field(p, "Uid")
                .is_none_or(|u| !u.split_whitespace().any(|x| x == uid.to_string()))),
        "a process of the dynamic uid {uid} outlived the sandbox"
    );
}

/// What the guest prints once it pinged the tap's side of its link.
const PING_OK: &str = "PADDOCK-MICROVM-PING ok";
/// The dynamic uids of the network test.
const NET_RANGE: &str = "300410-300419";

/// `run.sh --net`: the VM's virtio-net is on a tap that paddock made in the sandbox's veth
/// network (owned by the jail's dynamic user, with the address 172.31.0.1/30; QEMU only
/// attaches to it through `/dev/net/tun` in the jail); the guest takes 172.31.0.2 and
/// pings 172.31.0.1. Afterwards nothing is left: no namespace pin, no lease, no cgroup.
#[test]
fn a_jailed_qemu_vm_on_a_paddock_tap_pings_the_sandbox() {
    let test = "microvm_tap_ping";
    let Some(w) = world(test) else {
        return;
    };
    if !can_boot(test) {
        return;
    }
    if !Path::new("/dev/net/tun").exists() {
        paddock_testutil::skip(test, "no /dev/net/tun (modprobe tun)");
        return;
    }
    let kvm = std::env::var("PADDOCK_MICROVM_ACCEL").is_ok_and(|a| a == "kvm");
    let spec = example_spec(&w.tmp.path().join("microvm"), "vm-net", kvm, true);
    assert_eq!(
        spec["network"],
        json!({"veth": {"taps": [{"name": "tap0", "address": "172.31.0.1/30"}]}}),
        "{spec}"
    );
    // The network's state in this test's own places (198.18.0.0/15 only).
    let pin_dir = PathBuf::from(format!(
        "/run/paddock-test-netns/{test}-{}",
        std::process::id()
    ));
    let lease_file = pin_dir.with_extension("leases.json");
    struct Remove(PathBuf, PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
            let _ = std::fs::remove_file(&self.1);
            let _ = std::fs::remove_file(format!("{}.lock", self.1.display()));
        }
    }
    let _remove = Remove(pin_dir.clone(), lease_file.clone());
    let d = w.daemon(&[
        "--uid-range",
        NET_RANGE,
        "--net-pool",
        "198.18.207.0/28",
        "--net-lease-file",
        lease_file.to_str().unwrap(),
        "--net-pin-dir",
        pin_dir.to_str().unwrap(),
    ]);
    let body = serde_json::to_vec(&spec).unwrap();
    let t0 = Instant::now();
    let r = w.hyper("POST", "/v1/sandboxes", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["network"]["taps"], json!(["tap0"]), "{}", r.text());

    let log = wait_for(BOOT_TIMEOUT, "the guest's ping result in the log", || {
        let t = w.hyper("GET", "/v1/sandboxes/vm-net/logs", None).text();
        t.contains("PADDOCK-MICROVM-PING").then_some(t)
    });
    let line = log
        .lines()
        .find(|l| l.contains("PADDOCK-MICROVM-PING"))
        .unwrap()
        .trim_end();
    assert!(
        line.contains(PING_OK),
        "the guest could not ping the tap: {line}\n{log}"
    );
    eprintln!("microvm with a tap: {line} after {:.2?}", t0.elapsed());

    let stop = w.hyper("POST", "/v1/sandboxes/vm-net/stop?timeout=30s", None);
    assert_eq!(stop.status, 200, "{}", stop.text());
    let report = stop.json();
    assert_eq!(report["killed_after_grace"], 0, "{report}");
    assert_eq!(report["error"], Value::Null, "{report}");
    assert_eq!(w.hyper("DELETE", "/v1/sandboxes/vm-net", None).status, 204);
    drop(d);
    w.assert_no_leaks();
    let pins: Vec<_> = std::fs::read_dir(&pin_dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(pins.is_empty(), "namespace pins left: {pins:?}");
    let leases = std::fs::read_to_string(&lease_file).unwrap_or_default();
    assert!(
        leases.is_empty() || serde_json::from_str::<Value>(&leases).unwrap()["leases"] == json!([]),
        "leases left: {leases}"
    );
}
