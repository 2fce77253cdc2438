//! `hugetlb.<size>.max` against a payload that allocates huge pages (in the pure cgroup v2
//! VM: `vm/run-tests --tests hugetlb`): with 2 MiB of 2 MB pages allowed, `fallocate` of
//! 4 MiB in a hugetlbfs file fails; with 8 MiB it succeeds. The test reserves four 2 MB
//! pages (`vm.nr_hugepages`) and mounts a hugetlbfs, and puts both back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Restores `vm.nr_hugepages` and unmounts the hugetlbfs on drop.
struct HugePages {
    old: String,
    mnt: Option<PathBuf>,
}

impl Drop for HugePages {
    fn drop(&mut self) {
        if let Some(m) = &self.mnt {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", &self.old);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_hugetlb_max_bounds_huge_page_allocations() {
    let test = "vm_hugetlb_max_bounds_huge_page_allocations";
    let Some(env) = env(test) else { return };
    if !env
        .root
        .controllers()
        .unwrap()
        .iter()
        .any(|c| c == "hugetlb")
    {
        skip_missing(
            test,
            "the cgroup v2 hierarchy here has no hugetlb controller",
        );
        return;
    }
    if !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists() {
        skip_missing(test, "the kernel has no 2 MB huge pages");
        return;
    }
    let mut guard = HugePages {
        old: std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap(),
        mnt: None,
    };
    std::fs::write("/proc/sys/vm/nr_hugepages", "4").unwrap();
    let got = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap();
    assert_eq!(got.trim(), "4", "could not reserve four 2 MB pages");
    let mnt = env.scratch.path("huge");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount hugetlbfs");
    guard.mnt = Some(mnt.clone());
    for (allowed, ok) in [(2u64 << 20, false), (8 << 20, true)] {
        let out = env.scratch.path(&format!("out-{allowed}"));
        // fallocate(2) is system call 285 on x86_64: it allocates (and charges) the pages.
        let mut spec = sh(
            "huge",
            &format!(
                "exec perl -e 'open F, q(>), q({f}) or die qq(open: $!); $r = syscall(285, fileno(F), 0, 0, 4194304); print $r == 0 ? qq(OK\\n) : qq(ERR $!\\n); unlink q({f})' > {o}",
                f = mnt.join("f").display(),
                o = out.display()
            ),
        );
        spec.limits.hugetlb_max = [("2MB".to_string(), allowed)].into();
        let s = env.sup.start(spec).await.unwrap().info;
        let max = std::fs::read_to_string(s.cgroup_path.join("hugetlb.2MB.max")).unwrap();
        assert_eq!(max.trim(), allowed.to_string());
        env.sup.wait_stopped(&s.id, None).await.unwrap();
        let said = std::fs::read_to_string(&out).unwrap();
        println!(
            "{test}: hugetlb.2MB.max {allowed}: fallocate 4 MiB: {}",
            said.trim()
        );
        if ok {
            assert_eq!(said.trim(), "OK");
        } else {
            assert!(said.starts_with("ERR"), "{said}");
        }
        env.sup.forget(&s.id).unwrap();
    }
    env.assert_no_leaks();
}
