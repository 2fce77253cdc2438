//! [`crate::Options::net`]: every lifecycle that would run in the host's network gets a
//! `veth` network of its own instead (with `isolate` rules where `nft` is installed, and a
//! tap), and the end of the run checks — reading `/sys/class/net/*/ifalias`, the pin
//! directory, the lease file and `nft list ruleset` directly, not paddock's bookkeeping —
//! that no link, pinned namespace, nftables rule or lease of this run's supervisors is
//! left.
//!
//! The pool is 198.18.96.0/19 (RFC 2544's benchmarking range); IPv4 forwarding is left
//! alone; the namespaces are pinned under `/run/paddock-torture-netns/<run>`.

use std::path::PathBuf;

use paddock_supervisor::{Config, Network, TapSpec, VethSpec};

/// The run's network configuration and its independent leak check.
#[derive(Debug, Clone)]
pub(crate) struct NetRun {
    pin_dir: PathBuf,
    lease_file: PathBuf,
    /// Whether `nft` is installed (the sandboxes get `isolate` rules only then).
    rules: bool,
}

/// Whether `name` is a program in `PATH`.
fn in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

impl NetRun {
    /// The configuration of run `run`.
    pub(crate) fn new(run: &str) -> NetRun {
        let pin_dir = PathBuf::from(format!("/run/paddock-torture-netns/{run}"));
        NetRun {
            lease_file: pin_dir.join("leases.json"),
            pin_dir,
            rules: in_path("nft"),
        }
    }

    /// Why networks cannot be tortured here, if they cannot.
    pub(crate) fn unavailable() -> Option<String> {
        (!std::path::Path::new("/dev/net/tun").exists())
            .then(|| "/dev/net/tun is missing (tun module not loaded)".into())
    }

    /// Points `cfg`'s networks at the run's pin directory, lease file and pool.
    pub(crate) fn configure(&self, cfg: &mut Config) {
        cfg.net.pool = "198.18.96.0/19".parse().expect("a CIDR");
        cfg.net.pin_dir = self.pin_dir.clone();
        cfg.net.lease_file = self.lease_file.clone();
        cfg.net.ipv4_forwarding = false;
    }

    /// The network a lifecycle gets.
    pub(crate) fn network(&self) -> Network {
        Network::Veth(VethSpec {
            isolate: self.rules,
            taps: vec![TapSpec {
                name: "tap0".into(),
                uid: None,
                gid: None,
                multi_queue: false,
                vnet_hdr: false,
                address: Some("172.31.0.1/30".into()),
            }],
            ..Default::default()
        })
    }

    /// What is left of the supervisors `owners`: `(kind, detail)`.
    pub(crate) fn leftovers(&self, owners: &[String]) -> Vec<(&'static str, String)> {
        let mine = |s: &str| owners.iter().any(|o| s.starts_with(&format!("{o}+")));
        let mut found = Vec::new();
        for e in std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
        {
            let alias = std::fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
            if mine(alias.trim()) {
                found.push((
                    "net-link",
                    format!(
                        "link {} (alias {}) left at the end",
                        e.file_name().to_string_lossy(),
                        alias.trim()
                    ),
                ));
            }
        }
        for e in std::fs::read_dir(&self.pin_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("leases.json") {
                found.push((
                    "net-netns",
                    format!("namespace {name} left pinned at the end"),
                ));
            }
        }
        if let Ok(b) = std::fs::read(&self.lease_file)
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
        {
            for h in v["leases"].as_array().into_iter().flatten() {
                let holder = h["holder"].as_str().unwrap_or_default();
                if owners.iter().any(|o| o == holder) {
                    found.push(("net-lease", format!("lease {h} left at the end")));
                }
            }
        }
        if self.rules
            && let Ok(out) = paddock_proc::Command::new("nft")
                .args(["list", "ruleset"])
                .output()
        {
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((_, c)) = l.split_once("comment \"")
                    && mine(c.trim_end_matches('"'))
                {
                    found.push(("net-rule", format!("rule `{}` left at the end", l.trim())));
                }
            }
        }
        found
    }

    /// Deletes the (empty) nftables table of each of `owners` in the host namespace.
    pub(crate) async fn delete_tables(&self, owners: &[String]) {
        if !self.rules {
            return;
        }
        for o in owners {
            if let (Ok(tag), Ok(host)) = (
                paddock_net::Tag::new(o.as_str()),
                paddock_net::netns::open_host(),
            ) && let Err(e) = paddock_net::Nft::new(&tag, host).delete_table().await
            {
                eprintln!("paddock-torture: could not delete the nftables table of {o}: {e}");
            }
        }
    }

    /// Removes whatever the run left (after [`NetRun::leftovers`] counted it): the pinned
    /// namespaces (which takes their links), the lease file, the pin directory.
    pub(crate) fn cleanup(&self) {
        for e in std::fs::read_dir(&self.pin_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
            let _ = std::fs::remove_file(&p);
        }
        let _ = std::fs::remove_dir(&self.pin_dir);
        let _ = std::fs::remove_dir("/run/paddock-torture-netns");
    }
}
