//! The hostile payloads: shell and Python scripts written into the scratch directory.
//!
//! Every payload gets these environment variables from the runner:
//!
//! * `TP` — the per-sandbox PID file; each payload process appends its PID (one a line);
//! * `TR` — the per-sandbox ready file, written once the payload's tree is built;
//! * `TB` — the directory of these scripts;
//! * `TV` — a variant number (0..=3) picked from the seed;
//! * `TN` — a size parameter (loop count, tree depth, threads) picked from the seed;
//! * `TNS` — the network namespace name (`wrapper-netns` only);
//! * `TORTURE_TAG` — `<runner pid>.<run>.<sandbox ID>`; the leak scan finds payload processes by it in
//!   `/proc/<pid>/environ`, independently of paddock.

use std::io;
use std::path::Path;

/// `(file name, contents)` of every script.
pub const SCRIPTS: &[(&str, &str)] = &[
    ("stubborn.sh", STUBBORN),
    ("worker.sh", WORKER),
    ("double-fork.sh", DOUBLE_FORK),
    ("sigblock.sh", SIGBLOCK),
    ("block.py", BLOCK_PY),
    ("sigstop.sh", SIGSTOP),
    ("fork-storm.sh", FORK_STORM),
    ("tree.sh", TREE),
    ("threads.py", THREADS_PY),
    ("vfork.py", VFORK_PY),
    ("instant-exit.sh", INSTANT_EXIT),
    ("nested.sh", NESTED),
    ("zombie-storm.sh", ZOMBIE_STORM),
];

/// Writes every script into `dir`.
pub fn install(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in SCRIPTS {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// Ignores SIGTERM and SIGINT (inherited across exec), records itself, sleeps.
const STUBBORN: &str = r#"trap '' TERM INT
echo $$ >> "$TP"
exec sleep 300
"#;

/// The real work below a wrapper: variant 0 obeys SIGTERM, others ignore it.
const WORKER: &str = r#"if [ "$TV" = 0 ]; then
  trap 'exit 0' TERM
  echo $$ >> "$TP"; echo r > "$TR"
  while :; do sleep 1 & wait $!; done
else
  trap '' TERM INT
  echo $$ >> "$TP"; echo r > "$TR"
  exec sleep 300
fi
"#;

/// Three double-forked `setsid` daemons that ignore SIGTERM; the main process then exits
/// (variant 0: the main-exit stop races the runner's stop) or stays, ignoring SIGTERM.
const DOUBLE_FORK: &str = r#"echo $$ >> "$TP"
for i in 1 2 3; do
  ( setsid /bin/sh "$TB/stubborn.sh" & )
done
while [ "$(wc -l < "$TP")" -lt 4 ]; do sleep 0.005; done
echo r > "$TR"
[ "$TV" = 0 ] && exit 0
trap '' TERM
exec sleep 300
"#;

/// Python processes that block SIGTERM and SIGINT with sigprocmask, plus a shell that
/// ignores both.
const SIGBLOCK: &str = r#"trap '' TERM INT
echo $$ >> "$TP"
python3 "$TB/block.py" &
python3 "$TB/block.py" &
/bin/sh "$TB/stubborn.sh" &
while [ "$(wc -l < "$TP")" -lt 4 ]; do sleep 0.005; done
echo r > "$TR"
exec sleep 300
"#;

const BLOCK_PY: &str = r#"import os, signal, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
with open(os.environ["TP"], "a") as f:
    f.write(f"{os.getpid()}\n")
time.sleep(300)
"#;

/// Processes stopped with SIGSTOP (variant 1: the main process stops itself too).
const SIGSTOP: &str = r#"trap '' TERM
echo $$ >> "$TP"
for i in 1 2 3; do sleep 300 & echo $! >> "$TP"; kill -STOP $!; done
/bin/sh "$TB/stubborn.sh" & s=$!
while [ "$(wc -l < "$TP")" -lt 5 ]; do sleep 0.005; done
kill -STOP $s
echo r > "$TR"
[ "$TV" = 1 ] && kill -STOP $$
exec sleep 300
"#;

/// A fork storm bounded by its own loop count (`TN`): every iteration forks a subshell
/// that leaves a SIGTERM-ignoring `sleep` behind. The runner stops it mid-storm.
const FORK_STORM: &str = r#"trap '' TERM
echo $$ >> "$TP"
echo r > "$TR"
i=0
while [ $i -lt "$TN" ]; do
  ( sleep 30 & echo $! >> "$TP" )
  i=$((i+1))
done
exec sleep 300
"#;

/// A binary tree of depth `$1` (or `TN`), built slowly; the runner stops it while it is
/// still being built.
const TREE: &str = r#"trap '' TERM
echo $$ >> "$TP"
d=${1:-$TN}
if [ "$d" -gt 0 ]; then
  sleep 0.005
  /bin/sh "$0" $((d-1)) &
  /bin/sh "$0" $((d-1)) &
else
  echo r >> "$TR"
fi
exec sleep 300
"#;

/// Many threads (`TN`) in one process that ignores SIGTERM.
const THREADS_PY: &str = r#"import os, signal, threading, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
n = int(os.environ.get("TN", "64"))
for _ in range(n):
    threading.Thread(target=time.sleep, args=(300,), daemon=True).start()
with open(os.environ["TP"], "a") as f:
    f.write(f"{os.getpid()}\n")
with open(os.environ["TR"], "w") as f:
    f.write("r\n")
time.sleep(300)
"#;

/// A chain of `os.posix_spawn` (glibc implements it with `clone(CLONE_VM | CLONE_VFORK)`):
/// each link vfork-spawns the next link and a SIGTERM-ignoring shell; SIG_IGN for SIGTERM
/// is inherited through the chain.
const VFORK_PY: &str = r#"import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
depth = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("TN", "3"))
with open(os.environ["TP"], "a") as f:
    f.write(f"{os.getpid()}\n")
if depth > 0:
    os.posix_spawn(sys.executable, [sys.executable, __file__, str(depth - 1)], os.environ)
    os.posix_spawn("/bin/sh", ["/bin/sh", os.environ["TB"] + "/stubborn.sh"], os.environ)
else:
    with open(os.environ["TR"], "w") as f:
        f.write("r\n")
time.sleep(300)
"#;

/// Exits at once: variant 0 plainly, variant 1 leaving a child behind, variant 2 with a
/// non-zero code.
const INSTANT_EXIT: &str = r#"echo $$ >> "$TP"
case "$TV" in
  1) sleep 5 & echo $! >> "$TP"; exit 0 ;;
  2) exit 3 ;;
  *) exit 0 ;;
esac
"#;

/// Nested child cgroups made by the payload under its own cgroup.
///
/// * variant 0: the payload moves itself into a leaf `leaf/` (the no-internal-process
///   rule), makes `a/`, `a/x/`, `b/` with processes moved in, freezes `b/`, enables the
///   first controller its cgroup is offered (`cgroup.controllers`) in its own
///   `cgroup.subtree_control` and logs `subtree_control: ok +<c>`, `failed +<c>` or
///   `none offered`, and tries to make `c/` threaded (the kernel refuses while domain
///   siblings are populated);
/// * variant 1: a threaded child `t/` with a process's thread moved into it;
/// * variant 2: `TN` (1000..=5000) descendants at once, as many as
///   `cgroup.max.descendants` allows (logged as `descendants: <made> of <TN> ...`), and a
///   chain deeper than `cgroup.max.depth`;
/// * variant 3: a frozen child with a SIGTERM-ignoring process and a nested frozen child.
const NESTED: &str = r#"trap '' TERM
echo $$ >> "$TP"
cg=$(sed -n 's/^0:://p' /proc/self/cgroup)
mnt=$(awk '{for(i=7;i<=NF;i++) if($i=="-"){ if($(i+1)=="cgroup2"){print $5; exit}; break}}' /proc/self/mountinfo)
base="$mnt$cg"
put() { sleep 300 & p=$!; echo $p >> "$TP"; echo $p > "$1/cgroup.procs" 2>/dev/null; }
case "$TV" in
  0)
    mkdir -p "$base/leaf" "$base/a/x" "$base/b" "$base/c"
    echo $$ > "$base/leaf/cgroup.procs"
    put "$base/a"; put "$base/a/x"; put "$base/b"
    echo 1 > "$base/b/cgroup.freeze"
    c=$(tr ' ' '\n' < "$base/cgroup.controllers" | grep -m1 .)
    if [ -z "$c" ]; then
      echo "subtree_control: none offered"
    elif echo "+$c" > "$base/cgroup.subtree_control" 2>/dev/null; then
      echo "subtree_control: ok +$c"
    else
      echo "subtree_control: failed +$c"
    fi
    echo threaded > "$base/c/cgroup.type" 2>/dev/null
    ;;
  1)
    mkdir -p "$base/t"
    if echo threaded > "$base/t/cgroup.type" 2>/dev/null; then
      sleep 300 & p=$!; echo $p >> "$TP"
      echo $p > "$base/t/cgroup.threads" 2>/dev/null
      mkdir -p "$base/t/u" && echo threaded > "$base/t/u/cgroup.type" 2>/dev/null
    fi
    ;;
  2)
    # A few mkdirs for all of them (a fork per directory would take seconds).
    awk -v b="$base" -v n="$TN" 'BEGIN { for (i = 0; i < n; i++) print b "/d" i }' |
      xargs mkdir 2>/dev/null
    made=$(ls -d "$base"/d* 2>/dev/null | wc -l)
    echo "descendants: $made of $TN (cgroup.max.descendants $(cat "$base/cgroup.max.descendants"))"
    put "$base/d0"
    p="$base/deep"; j=0
    while [ $j -lt 40 ] && mkdir "$p" 2>/dev/null; do p="$p/n"; j=$((j+1)); done
    ;;
  *)
    mkdir -p "$base/f/g"
    sh -c 'trap "" TERM; exec sleep 300' & p=$!; echo $p >> "$TP"; echo $p > "$base/f/cgroup.procs"
    put "$base/f/g"
    echo 1 > "$base/f/g/cgroup.freeze"
    echo 1 > "$base/f/cgroup.freeze"
    ;;
esac
echo r > "$TR"
exec sleep 300
"#;

/// `TN` (1000..=3000) short-lived double-forked daemons: each iteration forks a subshell
/// that puts `:` in the background and exits at once, so the daemon (or its zombie) is
/// handed to the subreaper — the supervisor's process — and is a zombie of it once it
/// exits, until reaped. Variants 0 and 2 write the ready file once all are made (the stop
/// finds thousands of zombies), 1 and 3 at once (the stop arrives mid-storm). Logs
/// `daemons: <made>`.
const ZOMBIE_STORM: &str = r#"trap '' TERM
echo $$ >> "$TP"
case "$TV" in 1|3) echo r > "$TR" ;; esac
i=0
while [ $i -lt "$TN" ]; do
  ( { :; } & )
  i=$((i+1))
done
echo "daemons: $i"
case "$TV" in 1|3) ;; *) echo r > "$TR" ;; esac
exec sleep 300
"#;
