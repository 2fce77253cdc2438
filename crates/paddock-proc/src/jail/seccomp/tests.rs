//! The compiler's output run by a small classic-BPF interpreter (the kernel runs the same
//! programs in `tests/seccomp.rs`).

use super::default::{DENIED, DENIED_SOCKET_FAMILIES, PERSONALITIES};
use super::syscalls::SyscallTable;
use super::*;

#[cfg(target_arch = "x86_64")]
const NATIVE: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const NATIVE: u32 = 0xC000_00B7;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

/// Runs `prog` on a `seccomp_data` and returns what it returns.
fn run(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
    run_counted(prog, arch, nr, args).0
}

/// [`run`], and how many instructions it executed.
fn run_counted(prog: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> (u32, usize) {
    let mut steps = 0;
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        steps += 1;
        let jump = |cond: bool| if cond { i.jt as usize } else { i.jf as usize };
        pc += 1;
        match i.code {
            0x20 => {
                let k = i.k as usize;
                acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
            }
            0x54 => acc &= i.k,
            0x05 => pc += i.k as usize,
            0x15 => pc += jump(acc == i.k),
            0x25 => pc += jump(acc > i.k),
            0x35 => pc += jump(acc >= i.k),
            0x06 => return (i.k, steps),
            c => panic!("unexpected opcode {c:#x} at {}", pc - 1),
        }
    }
}

fn nr(name: &str) -> i64 {
    SyscallTable::native().number(name).unwrap()
}

fn call(f: &SeccompFilter, name: &str, args: [u64; 6]) -> u32 {
    run(f.instructions(), NATIVE, nr(name), args)
}

#[test]
fn default_profile_denies_and_allows() {
    let f = SeccompFilter::default_profile();
    let n = f.instructions().len();
    eprintln!("default profile: {n} instructions");
    assert!(n < MAX_INSTRUCTIONS, "{n}");
    assert!(f.warnings().is_empty());
    let t = SyscallTable::native();
    let mut denied = 0;
    for name in DENIED {
        if let Some(nr) = t.number(name) {
            assert_eq!(
                run(f.instructions(), NATIVE, nr, [0; 6]),
                errno(libc::EPERM),
                "{name}"
            );
            denied += 1;
        }
    }
    assert!(denied >= DENIED.len() - 4, "{denied}");
    for name in [
        "getpid", "read", "write", "openat", "execve", "wait4", "chroot", "seccomp",
    ] {
        assert_eq!(call(&f, name, [0; 6]), ALLOW, "{name}");
    }
    assert_eq!(call(&f, "clone3", [0; 6]), errno(libc::ENOSYS));

    let sigchld = libc::SIGCHLD as u64;
    let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND) as u64
        | (libc::CLONE_THREAD | libc::CLONE_SYSVSEM | libc::CLONE_SETTLS) as u64;
    assert_eq!(call(&f, "clone", [sigchld, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&f, "clone", [thread, 0, 0, 0, 0, 0]), ALLOW);
    for ns in [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWCGROUP,
    ] {
        let flags = ns as u64 | sigchld;
        assert_eq!(
            call(&f, "clone", [flags, 0, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(
            call(&f, "unshare", [ns as u64, 0, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        // Setting the upper 32 bits does not hide the flag.
        let high = flags | 0xffff_ffff_0000_0000;
        assert_eq!(call(&f, "clone", [high, 0, 0, 0, 0, 0]), errno(libc::EPERM));
    }
    assert_eq!(
        call(&f, "unshare", [0x80, 0, 0, 0, 0, 0]),
        errno(libc::EPERM)
    );
    let files = (libc::CLONE_FILES | libc::CLONE_FS | libc::CLONE_SYSVSEM) as u64;
    assert_eq!(call(&f, "unshare", [files, 0, 0, 0, 0, 0]), ALLOW);

    for p in PERSONALITIES {
        assert_eq!(call(&f, "personality", [p, 0, 0, 0, 0, 0]), ALLOW, "{p:#x}");
    }
    // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC.
    for p in [0x0040000u64, 0x0400000] {
        let r = call(&f, "personality", [p, 0, 0, 0, 0, 0]);
        assert_eq!(r, errno(libc::EPERM), "{p:#x}");
    }
    for fam in DENIED_SOCKET_FAMILIES {
        assert_eq!(call(&f, "socket", [fam, 1, 0, 0, 0, 0]), errno(libc::EPERM));
    }
    for fam in [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
        39,
        41,
    ] {
        assert_eq!(call(&f, "socket", [fam as u64, 1, 0, 0, 0, 0]), ALLOW);
    }
}

#[test]
fn foreign_abis_are_refused() {
    let f = SeccompFilter::default_profile();
    // i386's getpid is 20.
    assert_eq!(
        run(f.instructions(), AUDIT_ARCH_I386, 20, [0; 6]),
        KILL_PROCESS
    );
    let oci = SeccompFilter::from_oci_json(br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    assert_eq!(
        run(oci.instructions(), AUDIT_ARCH_I386, 20, [0; 6]),
        KILL_PROCESS
    );
    #[cfg(target_arch = "x86_64")]
    for prog in [f.instructions(), oci.instructions()] {
        let x32_getpid = 0x4000_0000 | libc::SYS_getpid;
        assert_eq!(run(prog, NATIVE, x32_getpid, [0; 6]), errno(libc::ENOSYS));
        assert_eq!(run(prog, NATIVE, -1, [0; 6]), errno(libc::ENOSYS));
    }
}

#[test]
fn oci_first_match_wins_and_conditions_compare_64_bits() {
    let json = br#"{
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 2, "value": 4294967296, "op": "SCMP_CMP_LT"}]},
            {"names": ["read", "write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid", "no_such_call"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 2, "value": 4, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"},
                      {"index": 3, "value": 34, "op": "SCMP_CMP_NE"}]},
            {"names": ["fcntl"], "action": "SCMP_ACT_LOG",
             "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["dup3"], "action": "SCMP_ACT_TRAP",
             "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_GE"},
                      {"index": 0, "value": 9, "op": "SCMP_CMP_LE"}]}
        ]}"#;
    let f = SeccompFilter::from_oci_json(json).unwrap();
    // Only the aarch64 or x86_64 entry that is foreign, and the unknown name.
    assert_eq!(f.warnings().len(), 2, "{:?}", f.warnings());
    assert!(
        f.warnings()[1].contains("syscalls[3].names[1]"),
        "{:?}",
        f.warnings()
    );
    assert_eq!(call(&f, "read", [0, 0, 10, 0, 0, 0]), ALLOW);
    assert_eq!(call(&f, "read", [0, 0, 1 << 32, 0, 0, 0]), errno(13));
    assert_eq!(call(&f, "write", [0; 6]), errno(13));
    assert_eq!(call(&f, "getpid", [0; 6]), KILL_PROCESS);
    assert_eq!(call(&f, "mmap", [0, 0, 3, 0x22, 0, 0]), errno(38));
    assert_eq!(call(&f, "mmap", [0, 0, 3, 0x02, 0, 0]), ALLOW);
    assert_eq!(call(&f, "mmap", [0, 0, 7, 0x02, 0, 0]), errno(38));
    assert_eq!(call(&f, "mmap", [0, 0, 3, (1 << 32) | 0x22, 0, 0]), ALLOW);
    // Two conditions on one argument: ORed, as runc does.
    assert_eq!(call(&f, "fcntl", [0, 1, 0, 0, 0, 0]), libc::SECCOMP_RET_LOG);
    assert_eq!(call(&f, "fcntl", [0, 2, 0, 0, 0, 0]), libc::SECCOMP_RET_LOG);
    assert_eq!(call(&f, "fcntl", [0, 3, 0, 0, 0, 0]), errno(38));
    assert_eq!(call(&f, "dup3", [2, 0, 0, 0, 0, 0]), libc::SECCOMP_RET_TRAP);
    assert_eq!(
        call(&f, "dup3", [10, 0, 0, 0, 0, 0]),
        libc::SECCOMP_RET_TRAP
    );
    assert_eq!(call(&f, "close", [0; 6]), errno(38));
}

fn err(json: &str) -> String {
    SeccompFilter::from_oci_json(json.as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_oci_profiles_name_the_field() {
    let cases = [
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"},{"names":["read"],"action":"SCMP_ACT_ALLOW"},{"names":["read"],"action":"SCMP_ACT_ALLOW"},{"names":["read"],"action":"SCMP_ACT_FOO"}]}"#,
            r#"syscalls[3].action: unknown action "SCMP_ACT_FOO""#,
        ),
        (
            r#"{"defaultAction":"ALLOW"}"#,
            "defaultAction: unknown action \"ALLOW\"",
        ),
        (r#"{}"#, "missing field `defaultAction`"),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","bogus":1}"#,
            "unknown field `bogus`",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":"x"}]}"#,
            "syscalls[0].errnoRet: invalid type",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":5000}"#,
            "defaultErrnoRet: errno 5000 is out of range",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#,
            "syscalls[0].errnoRet: an errno return is only meaningful with SCMP_ACT_ERRNO",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_TRACE"}]}"#,
            r#"syscalls[0].action: action "SCMP_ACT_TRACE" is not supported"#,
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
            "syscalls[0].args[0].index: argument index 6 is out of range",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":0,"op":"SCMP_CMP_FOO"}]}]}"#,
            r#"syscalls[0].args[0].op: unknown operator "SCMP_CMP_FOO""#,
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"valueTwo":2,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
            "syscalls[0].args[0].valueTwo: 0x2 has bits outside the mask value 0x1",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":-1,"op":"SCMP_CMP_EQ"}]}]}"#,
            "syscalls[0].args[0].value: invalid value",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]}"#,
            "syscalls[0].names: no system call is named",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["bpf"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_BPF"]}}]}"#,
            "syscalls[0].includes: Docker's conditional rules",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_Z80"]}"#,
            r#"architectures[0]: unknown architecture "SCMP_ARCH_Z80""#,
        ),
        (r#"[[[["#, "seccomp profile: "),
    ];
    for (json, want) in cases {
        let e = err(json);
        assert!(e.contains(want), "{json}\n  gave: {e}\n  want: {want}");
    }
    // Deep nesting is an error, not a stack overflow.
    let deep = format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","flags":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(err(&deep).contains("flags"), "{}", err(&deep));
}

#[test]
fn oversized_profiles_are_refused() {
    let big = format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","comment":"{}"}}"#,
        "x".repeat(MAX_JSON_BYTES)
    );
    assert!(matches!(
        SeccompFilter::from_oci_json(big.as_bytes()),
        Err(SeccompError::InputTooLarge(_))
    ));
    let entry = r#"{"names":["read"],"action":"SCMP_ACT_ALLOW"}"#;
    let many = format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
        vec![entry; MAX_RULES + 1].join(",")
    );
    assert!(
        err(&many).contains("syscalls: 1025 entries"),
        "{}",
        err(&many)
    );
    // Alternating actions over many names: more instructions than the kernel takes.
    let rules: Vec<String> = SyscallTable::native()
        .0
        .keys()
        .enumerate()
        .map(|(i, n)| {
            let a = if i % 2 == 0 { "SCMP_ACT_ALLOW" } else { "SCMP_ACT_LOG" };
            format!(r#"{{"names":["{n}"],"action":"{a}","args":[{{"index":1,"value":{i},"op":"SCMP_CMP_GT"}},{{"index":2,"value":{i},"op":"SCMP_CMP_LT"}}]}}"#)
        })
        .collect();
    let huge = format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
        rules.join(",")
    );
    let e = SeccompFilter::from_oci_json(huge.as_bytes()).unwrap_err();
    assert!(matches!(e, SeccompError::TooLarge(_)), "{e}");
    assert!(e.to_string().contains("4096"), "{e}");
}

#[test]
fn the_binary_search_of_named_numbers_changes_no_answer_and_shortens_the_rest() {
    let oci = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
        {"names":["read","write","close","exit_group"],"action":"SCMP_ACT_ALLOW"},
        {"names":["openat"],"action":"SCMP_ACT_ALLOW","args":[{"index":2,"value":0,"op":"SCMP_CMP_EQ"}]},
        {"names":["kill"],"action":"SCMP_ACT_LOG"}]}"#;
    let (oci, _) = super::oci::parse(oci).unwrap();
    let args_set = [
        [0u64; 6],
        [1, 2, 3, 4, 5, 6],
        [u64::MAX; 6],
        [0x7e02_0000, 0x10, 0, 0x5401, 0, 0],
        [libc::AF_NETLINK as u64, 0, 0, 0, 0, 0],
    ];
    for profile in [super::default::profile(), oci] {
        let fast = compile::compile_with(&profile, true).unwrap();
        let linear = compile::compile_with(&profile, false).unwrap();
        for nr in 0..1024i64 {
            for args in args_set {
                assert_eq!(
                    run(&fast, NATIVE, nr, args),
                    run(&linear, NATIVE, nr, args),
                    "nr {nr}, args {args:?}"
                );
            }
        }
        for arch in [NATIVE, AUDIT_ARCH_I386] {
            assert_eq!(run(&fast, arch, 1, [0; 6]), run(&linear, arch, 1, [0; 6]));
        }
    }
    // A number the default profile does not name is answered within the search's depth,
    // where the linear chain ran through every segment.
    let profile = super::default::profile();
    let fast = compile::compile_with(&profile, true).unwrap();
    let linear = compile::compile_with(&profile, false).unwrap();
    let getpid = nr("getpid");
    let (a, fast_steps) = run_counted(&fast, NATIVE, getpid, [0; 6]);
    let (b, linear_steps) = run_counted(&linear, NATIVE, getpid, [0; 6]);
    assert_eq!((a, b), (ALLOW, ALLOW));
    assert!(fast_steps <= 30, "getpid took {fast_steps} instructions");
    assert!(
        linear_steps > 5 * fast_steps,
        "linear {linear_steps}, with the search {fast_steps}"
    );
}
