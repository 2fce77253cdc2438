//! The managed root's exclusive lock and the owner tags of sandbox cgroups, against the
//! real kernel.

mod common;

use common::*;
use paddock_cgroup::{Error, Liveness, Owner, Root};

/// One holder at a time, whatever path names the root; the error names the holder; the
/// lock goes with its holder.
#[test]
fn root_lock_is_exclusive_and_names_its_holder() {
    let Some((t, root)) = root("root_lock_is_exclusive") else {
        return;
    };
    let held = root.lock_exclusive().unwrap();
    // The same directory opened again, through its path relative to the mount.
    let again = Root::open_or_create(&t.relative().join("root")).unwrap();
    match again.lock_exclusive() {
        Err(Error::RootLocked { path, holder }) => {
            assert_eq!(path, root.path());
            assert_eq!(holder, Some(std::process::id() as i32));
            let msg = Error::RootLocked { path, holder }.to_string();
            assert!(
                msg.contains(&format!("(pid {})", std::process::id()))
                    && msg.contains("one daemon manages a root at a time"),
                "{msg}"
            );
        }
        other => panic!("a second lock of one root: {other:?}"),
    }
    // Another root is another lock.
    let other = Root::open_or_create(&t.path().join("other")).unwrap();
    let _other = other.lock_exclusive().unwrap();
    drop(held);
    let _now = again.lock_exclusive().unwrap();
}

/// A cgroup tagged with this process as its owner says so, and the tag parses back.
#[test]
fn process_owner_tag_on_a_cgroup() {
    let Some((_t, root)) = root("process_owner_tag_on_a_cgroup") else {
        return;
    };
    let me = Owner::this_process().unwrap();
    let cg = root.create(&name("mine@0000000000000001")).unwrap();
    cg.set_owner(&me.to_string()).unwrap();
    let tag = root
        .owner_of(&name("mine@0000000000000001"))
        .unwrap()
        .unwrap();
    assert!(
        tag.starts_with(&format!("pid:{}:", std::process::id())),
        "{tag}"
    );
    assert_eq!(Owner::parse(&tag), me);
    assert_eq!(Owner::parse(&tag).liveness(), Liveness::Alive);
    std::fs::remove_dir(cg.path()).unwrap();
}
