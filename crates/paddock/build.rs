//! Sets `PADDOCK_GIT_COMMIT` for `paddock --version`: the environment's `PADDOCK_GIT_COMMIT`
//! when set (packagers building from a tarball), else `git rev-parse --short=12 HEAD` of the
//! repository being built, else `unknown`. Reruns when HEAD or the branch it points to moves,
//! so the commit stays fresh without rebuilding on every build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PADDOCK_GIT_COMMIT");
    let from_env = std::env::var("PADDOCK_GIT_COMMIT")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let commit = from_env.or_else(|| {
        let commit = git(&here, &["rev-parse", "--short=12", "HEAD"])?;
        // Rerun when HEAD moves (checkout, commit on a detached HEAD) or the branch it
        // names moves (commit, reset): HEAD in the worktree's git dir, the branch's loose
        // ref and packed-refs in the common dir. Only files that exist are named (cargo
        // reruns on every build for a missing one).
        let abs = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { here.join(p) }
        };
        let mut watch = Vec::new();
        if let Some(d) = git(&here, &["rev-parse", "--git-dir"]).map(abs) {
            watch.push(d.join("HEAD"));
        }
        if let Some(common) = git(&here, &["rev-parse", "--git-common-dir"]).map(abs) {
            if let Some(branch) = git(&here, &["symbolic-ref", "-q", "HEAD"]) {
                watch.push(common.join(branch));
            }
            watch.push(common.join("packed-refs"));
        }
        for p in watch.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
        Some(commit)
    });
    // Only what a version string may hold: a commit from the environment is not trusted
    // to be one.
    let commit: String = commit
        .unwrap_or_else(|| "unknown".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
        .take(64)
        .collect();
    let commit = if commit.is_empty() {
        "unknown".into()
    } else {
        commit
    };
    println!("cargo:rustc-env=PADDOCK_GIT_COMMIT={commit}");
}
