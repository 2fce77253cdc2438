//! The daemon's stop is not finished until the zombies it made are reaped: a sandbox whose
//! daemon chains (each daemon forks the next and exits, like `stress-ng --daemon`) are
//! killed by the stop leaves thousands of processes reparented to the daemon (a
//! subreaper); when the stop's outcome is out (`paddock wait` returns), none of them may
//! be left as the daemon's child, zombie or still exiting.

mod common;

use common::*;

/// 4 daemon chains that keep forking, running when the main process exits after 0.5 s.
const CHAINS: &str = r#"exec perl -e '
    for (1..4) {
        my $p = fork();
        if (defined $p && $p == 0) {
            while (1) { my $c = fork(); exit 0 if $c; }
        }
    }
    select(undef, undef, undef, 0.5);
    exit 0'"#;

/// Children of `pid` that are zombies, and those whose cgroup is under `cgroup`.
fn children_of(pid: i32, cgroup: &str) -> (usize, Vec<i32>) {
    let mut zombies = 0;
    let mut of_sandbox = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|pp| pp.parse::<i32>().ok()) != Some(pid) {
            continue;
        }
        if f.first() == Some(&"Z") {
            zombies += 1;
        }
        if std::fs::read_to_string(format!("/proc/{p}/cgroup"))
            .is_ok_and(|c| c.lines().any(|l| l.starts_with(&format!("0::{cgroup}"))))
        {
            of_sandbox.push(p);
        }
    }
    (zombies, of_sandbox)
}

#[test]
fn daemon_stop_reaps_the_zombies_it_made() {
    let Some(w) = world("daemon_zombies_stop_reaps") else {
        return;
    };
    let d = w.daemon(&[]);
    for round in 0..3 {
        let id = format!("chains-{round}");
        let r = w.http("POST", "/v1/sandboxes", Some(&spec(&id, CHAINS)));
        assert_eq!(r.status, 201, "{}", r.text());
        let lc = r.json()["lifecycle"].as_str().unwrap().to_owned();
        // Returns once the stop's outcome is out.
        let o = w.cli(&["wait", &id]);
        assert!(o.status.success(), "{o:?}");
        let cgroup = format!("/{}/sandboxes/{id}@{lc}", w.t.relative().display());
        let (zombies, of_sandbox) = children_of(d.pid(), &cgroup);
        let m = w.http("GET", "/metrics", None).text();
        eprintln!(
            "daemon_zombies: round {round}: right after the stop: {zombies} zombie children of the daemon, {} of the sandbox; {:?}",
            of_sandbox.len(),
            m.lines()
                .find(|l| l.starts_with("paddock_sandbox_stops_total"))
        );
        assert_eq!(zombies, 0, "round {round}: the daemon has zombie children");
        assert!(
            of_sandbox.is_empty(),
            "round {round}: processes of the stopped sandbox are still the daemon's children: {of_sandbox:?}"
        );
    }
    w.assert_no_leaks();
}
