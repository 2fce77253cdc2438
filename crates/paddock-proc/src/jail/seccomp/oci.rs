//! The OCI runtime-spec `linux.seccomp` object, parsed and checked into compiler rules.

use serde::Deserialize;

use super::SeccompError;
use super::compile::{Action, Cond, Op, Profile, Rule};
use super::syscalls::SyscallTable;

/// Largest profile accepted, in bytes (Docker's default profile is about 20 KiB).
pub const MAX_JSON_BYTES: usize = 1 << 20;
/// Most `syscalls` entries accepted.
pub const MAX_RULES: usize = 1024;
/// Most system call names accepted, over all entries.
pub const MAX_NAMES: usize = 4096;
/// Most `args` of one entry.
pub const MAX_ARGS: usize = 16;
/// Most `architectures` entries.
const MAX_ARCHES: usize = 32;
/// Longest system call name accepted (the longest real one has 23 characters).
const MAX_NAME_LEN: usize = 64;
/// The kernel's `MAX_ERRNO`: larger `SECCOMP_RET_ERRNO` data is clamped.
const MAX_ERRNO: u32 = 4095;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Seccomp {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    flags: Option<Vec<String>>,
    listener_path: Option<String>,
    listener_metadata: Option<String>,
    syscalls: Option<Vec<Syscall>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Syscall {
    names: Option<Vec<String>>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<Arg>>,
    /// Free text (Docker's profiles carry it).
    #[serde(rename = "comment")]
    _comment: Option<serde_json::Value>,
    /// Docker's conditional rules: refused with an explanation, not silently ignored.
    includes: Option<serde_json::Value>,
    excludes: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> SeccompError {
    SeccompError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

fn action(path: &str, name: &str, errno: Option<u32>) -> Result<Action, SeccompError> {
    let errno_path = || {
        if path == "defaultAction" {
            "defaultErrnoRet".to_owned()
        } else {
            path.replace(".action", ".errnoRet")
        }
    };
    if errno.is_some() && name != "SCMP_ACT_ERRNO" && name != "SCMP_ACT_TRACE" {
        return Err(invalid(
            errno_path(),
            format!("an errno return is only meaningful with SCMP_ACT_ERRNO, not {name}"),
        ));
    }
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => {
            let e = errno.unwrap_or(libc::EPERM as u32);
            if e > MAX_ERRNO {
                return Err(invalid(
                    errno_path(),
                    format!("errno {e} is out of range (0..={MAX_ERRNO})"),
                ));
            }
            Action::Errno(e as u16)
        }
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_TRACE" => {
            return Err(invalid(
                path,
                "action \"SCMP_ACT_TRACE\" is not supported: it needs a ptrace tracer, which \
                 paddock does not provide; use SCMP_ACT_ERRNO, SCMP_ACT_LOG or SCMP_ACT_KILL",
            ));
        }
        "SCMP_ACT_NOTIFY" => {
            return Err(invalid(
                path,
                "action \"SCMP_ACT_NOTIFY\" is not supported: paddock has no seccomp agent \
                 (listenerPath); use SCMP_ACT_ERRNO or SCMP_ACT_LOG",
            ));
        }
        other => {
            return Err(invalid(
                path,
                format!(
                    "unknown action {other:?} (expected SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, \
                     SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, \
                     SCMP_ACT_TRAP or SCMP_ACT_LOG)"
                ),
            ));
        }
    })
}

fn cond(path: &str, arg: &Arg) -> Result<Cond, SeccompError> {
    if arg.index > 5 {
        return Err(invalid(
            format!("{path}.index"),
            format!(
                "argument index {} is out of range (a system call has arguments 0..=5)",
                arg.index
            ),
        ));
    }
    let op = match arg.op.as_str() {
        "SCMP_CMP_EQ" => Op::Eq,
        "SCMP_CMP_NE" => Op::Ne,
        "SCMP_CMP_LT" => Op::Lt,
        "SCMP_CMP_LE" => Op::Le,
        "SCMP_CMP_GT" => Op::Gt,
        "SCMP_CMP_GE" => Op::Ge,
        "SCMP_CMP_MASKED_EQ" => {
            if arg.value_two & !arg.value != 0 {
                return Err(invalid(
                    format!("{path}.valueTwo"),
                    format!(
                        "{:#x} has bits outside the mask value {:#x}: \
                         (arg & value) == valueTwo could never hold",
                        arg.value_two, arg.value
                    ),
                ));
            }
            Op::MaskedEq(arg.value)
        }
        other => {
            return Err(invalid(
                format!("{path}.op"),
                format!(
                    "unknown operator {other:?} (expected SCMP_CMP_EQ, SCMP_CMP_NE, \
                     SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_GT, SCMP_CMP_GE or SCMP_CMP_MASKED_EQ)"
                ),
            ));
        }
    };
    let value = match op {
        Op::MaskedEq(_) => arg.value_two,
        _ => arg.value,
    };
    Ok(Cond {
        index: arg.index as u8,
        op,
        value,
        wide: true,
    })
}

const ARCHES: &[&str] = &[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: &str = "SCMP_ARCH_X86_64";
#[cfg(not(target_arch = "x86_64"))]
const NATIVE_ARCH: &str = "SCMP_ARCH_AARCH64";

/// Parses and checks `json`; returns the profile and the warnings (ignored names, flags).
pub fn parse(json: &[u8]) -> Result<(Profile, Vec<String>), SeccompError> {
    if json.len() > MAX_JSON_BYTES {
        return Err(SeccompError::InputTooLarge(json.len()));
    }
    let de = &mut serde_json::Deserializer::from_slice(json);
    let spec: Seccomp = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        invalid(path, e.into_inner().to_string())
    })?;
    let mut warnings = Vec::new();

    let arches = spec.architectures.unwrap_or_default();
    if arches.len() > MAX_ARCHES {
        return Err(invalid(
            "architectures",
            format!("{} entries; at most {MAX_ARCHES}", arches.len()),
        ));
    }
    for (i, a) in arches.iter().enumerate() {
        if !ARCHES.contains(&a.as_str()) {
            return Err(invalid(
                format!("architectures[{i}]"),
                format!("unknown architecture {a:?}"),
            ));
        }
        if a != NATIVE_ARCH {
            warnings.push(format!(
                "architectures[{i}]: {a} is not filtered by its own rules: every system call \
                 through a foreign ABI is refused (the process is killed), and on x86_64 x32 \
                 system calls fail with ENOSYS"
            ));
        }
    }
    if let Some(flags) = spec.flags.filter(|f| !f.is_empty()) {
        warnings.push(format!(
            "flags {flags:?} are ignored: the filter is installed by the child for itself only, \
             with no flags"
        ));
    }
    if spec.listener_path.is_some() || spec.listener_metadata.is_some() {
        warnings.push(
            "listenerPath/listenerMetadata are ignored: SCMP_ACT_NOTIFY is not supported".into(),
        );
    }

    let default = action(
        "defaultAction",
        &spec.default_action,
        spec.default_errno_ret,
    )?;
    let syscalls = spec.syscalls.unwrap_or_default();
    if syscalls.len() > MAX_RULES {
        return Err(invalid(
            "syscalls",
            format!(
                "{} entries; at most {MAX_RULES} are accepted",
                syscalls.len()
            ),
        ));
    }
    let table = SyscallTable::native();
    let mut total_names = 0usize;
    let mut rules = Vec::with_capacity(syscalls.len());
    for (i, sc) in syscalls.iter().enumerate() {
        let path = format!("syscalls[{i}]");
        for (field, v) in [("includes", &sc.includes), ("excludes", &sc.excludes)] {
            if v.is_some() {
                return Err(invalid(
                    format!("{path}.{field}"),
                    "Docker's conditional rules (includes/excludes by capability, arch or \
                     kernel) are not part of the OCI format; resolve them into plain rules \
                     (the OCI profile `docker` or `runc` passes to the runtime has none)",
                ));
            }
        }
        let names = sc.names.as_deref().unwrap_or_default();
        if names.is_empty() {
            return Err(invalid(format!("{path}.names"), "no system call is named"));
        }
        total_names += names.len();
        if total_names > MAX_NAMES {
            return Err(invalid(
                format!("{path}.names"),
                format!("more than {MAX_NAMES} system call names in all"),
            ));
        }
        let action = action(&format!("{path}.action"), &sc.action, sc.errno_ret)?;
        let args = sc.args.as_deref().unwrap_or_default();
        if args.len() > MAX_ARGS {
            return Err(invalid(
                format!("{path}.args"),
                format!("{} conditions; at most {MAX_ARGS}", args.len()),
            ));
        }
        let conds = args
            .iter()
            .enumerate()
            .map(|(j, a)| cond(&format!("{path}.args[{j}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        // runc's rule: conditions on distinct arguments are ANDed; when one argument has
        // several, each condition becomes a rule of its own (ORed), as libseccomp once did.
        let repeated = (0..6u8).any(|ix| conds.iter().filter(|c| c.index == ix).count() > 1);
        let alternatives = if conds.is_empty() {
            Vec::new()
        } else if repeated {
            conds.into_iter().map(|c| vec![c]).collect()
        } else {
            vec![conds]
        };
        let mut nrs = Vec::with_capacity(names.len());
        for (j, name) in names.iter().enumerate() {
            let found = (name.len() <= MAX_NAME_LEN)
                .then(|| table.number(name))
                .flatten();
            match found {
                Some(nr) => nrs.push(nr),
                None => {
                    let shown: String = name.chars().take(MAX_NAME_LEN).collect();
                    warnings.push(format!(
                        "{path}.names[{j}]: unknown system call {shown:?} on {}, ignored",
                        std::env::consts::ARCH
                    ));
                }
            }
        }
        rules.push(Rule {
            action,
            syscalls: nrs,
            alternatives,
        });
    }
    Ok((Profile { default, rules }, warnings))
}
