//! Shared support of the real-kernel tests: skip checks, a per-test tag and pin
//! directory that clean up on drop, and running code inside a namespace.
#![allow(dead_code)] // each test binary uses a part

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use paddock_net::{Key, LeasePool, NetnsDir, Network, Tag, link};

pub static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn unavailable(test: &str) -> bool {
    if let Some(reason) = paddock_testutil::root_tests_unavailable() {
        paddock_testutil::skip(test, &reason);
        return true;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        paddock_testutil::skip(test, "/dev/net/tun is missing (tun module not loaded)");
        return true;
    }
    false
}

/// A unique tag, pin directory and pool for one test; cleans up on drop.
pub struct Cleanup {
    pub tag: Tag,
    pub pin_dir: PathBuf,
    /// Untagged links the test made itself, deleted by name.
    pub own_links: Vec<String>,
}

impl Cleanup {
    pub fn new(test: &str) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("t{}-{n}", std::process::id());
        Self {
            tag: Tag::new(format!("paddock-test-{id}")).unwrap(),
            pin_dir: PathBuf::from(format!("/run/paddock-test-netns/{test}-{id}")),
            own_links: Vec::new(),
        }
    }

    pub fn pool(&self, third_octet: u8) -> LeasePool {
        LeasePool::new(format!("198.18.{third_octet}.0/24").parse().unwrap(), 30).unwrap()
    }

    pub async fn network(&self) -> Network {
        Network::new(&self.pin_dir, self.tag.clone()).await.unwrap()
    }

    /// Host links whose alias carries this test's tag.
    pub async fn tagged_links(&self) -> Vec<String> {
        let h = link::connect("host", None).await.unwrap();
        let prefix = format!("{}+", self.tag);
        link::dump(&h)
            .await
            .unwrap()
            .iter()
            .filter(|m| link::alias_of(m).is_some_and(|a| a.starts_with(&prefix)))
            .filter_map(|m| link::name_of(m).map(str::to_owned))
            .collect()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let tag = self.tag.clone();
        let pin_dir = self.pin_dir.clone();
        let own = std::mem::take(&mut self.own_links);
        // A thread with a runtime of its own: the test's runtime may be gone or be the
        // one dropping us.
        let r = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let net = Network::new(&pin_dir, tag).await.unwrap();
                let left = net.reclaim(&HashSet::new()).await;
                let h = link::connect("host", None).await.unwrap();
                for name in own {
                    if let Ok(Some(m)) = link::get(&h, &name).await {
                        let _ = link::delete(&h, m.header.index, &name).await;
                    }
                }
                // The pin directory is the test's own: whatever else is pinned there
                // (namespaces of a foreign name the test made) goes too.
                let dir = NetnsDir::new(&pin_dir);
                for name in dir.list().unwrap_or_default() {
                    let _ = dir.delete(&name);
                }
                let _ = std::fs::remove_dir(&pin_dir);
                // The parent too once the last test is done with it (ENOTEMPTY before).
                if let Some(parent) = pin_dir.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
                left
            })
        })
        .join();
        if !std::thread::panicking() {
            let report = r.expect("cleanup thread").expect("cleanup reclaim");
            assert!(
                report.links.is_empty() && report.namespaces.is_empty(),
                "the test left objects behind: {report:?}"
            );
            assert!(
                !self.pin_dir.exists(),
                "{} left behind",
                self.pin_dir.display()
            );
        }
    }
}

pub fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

/// Runs `f` on a thread inside the namespace pinned at `path`.
pub fn in_ns<R: Send + 'static>(
    path: &std::path::Path,
    f: impl FnOnce() -> R + Send + 'static,
) -> std::thread::JoinHandle<R> {
    let fd = std::fs::File::open(path).unwrap();
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&fd),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        f()
    })
}

pub fn exchange(stream: &mut TcpStream, send: &[u8], expect: &[u8]) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(send).unwrap();
    let mut buf = vec![0u8; expect.len()];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(buf, expect);
}
