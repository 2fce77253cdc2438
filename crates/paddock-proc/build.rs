//! Builds `init/paddock-init.c`, the program a jail's init execs (see `src/jail/init_image.rs`),
//! into `$OUT_DIR/paddock-init` with the C compiler that links Rust programs here (`$CC`,
//! else `cc`), freestanding and static: no libc, about 2 KB of code.
//!
//! Where it cannot be built (another architecture or OS, a cross build without
//! `CC_<target>`, no C compiler), the crate builds without it (no `paddock_init_image`
//! cfg) and a jail's init is a fork-like copy of the spawner instead, as it was before the
//! image existed; a `cargo:warning` says so.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=init/paddock-init.c");
    println!("cargo::rerun-if-env-changed=CC");
    println!("cargo::rustc-check-cfg=cfg(paddock_init_image)");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" || !(arch == "x86_64" || arch == "aarch64") {
        println!(
            "cargo::warning=paddock-init is not built for {arch}-{os}: jailed inits fork instead"
        );
        return;
    }
    let target = env::var("TARGET").unwrap_or_default();
    let host = env::var("HOST").unwrap_or_default();
    let target_cc = format!("CC_{}", target.replace('-', "_"));
    println!("cargo::rerun-if-env-changed={target_cc}");
    let cc = match env::var(&target_cc).or_else(|_| env::var("CC")) {
        Ok(cc) => cc,
        Err(_) if target == host => "cc".to_string(),
        Err(_) => {
            println!(
                "cargo::warning=paddock-init is not built: cross build without {target_cc}; jailed inits fork instead"
            );
            return;
        }
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("paddock-init");
    let status = Command::new(&cc)
        .args([
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-fno-pie",
            "-no-pie",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wl,--build-id=none",
            "-s",
            "-o",
        ])
        .arg(&out)
        .arg("init/paddock-init.c")
        .status();
    match status {
        Ok(s) if s.success() => println!("cargo::rustc-cfg=paddock_init_image"),
        Ok(s) => {
            println!("cargo::warning=paddock-init: `{cc}` failed ({s}): jailed inits fork instead")
        }
        Err(e) => println!(
            "cargo::warning=paddock-init: cannot run `{cc}` ({e}): jailed inits fork instead"
        ),
    }
}
