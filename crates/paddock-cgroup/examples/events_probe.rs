//! Checks that `POLLPRI` on `cgroup.events` wakes an [`paddock_cgroup::EventsWatch`]: kills a
//! process and reports how long the wait for `populated 0` took (a lost notification shows as
//! the 100 ms backstop). `cargo run --release -p paddock-cgroup --example events_probe` (root).

use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let root =
        paddock_cgroup::Root::open_or_create(std::path::Path::new("paddock-bench.events-probe"))
            .unwrap();
    for i in 0..10 {
        let cg = root
            .create(&paddock_cgroup::CgroupName::new(format!("p{i}")).unwrap())
            .unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        std::fs::write(cg.path().join("cgroup.procs"), child.id().to_string()).unwrap();
        let w = cg.watch().unwrap();
        assert!(w.read().unwrap().populated);
        let t0 = Instant::now();
        std::fs::write(cg.path().join("cgroup.kill"), "1").unwrap();
        let ok = w.wait_unpopulated(Duration::from_secs(1)).await.unwrap();
        println!("populated 0 after {:?} ({ok})", t0.elapsed());
        let _ = child.wait();
        cg.remove(&Default::default()).await.unwrap();
    }
    std::fs::remove_dir(root.path()).unwrap();
}
