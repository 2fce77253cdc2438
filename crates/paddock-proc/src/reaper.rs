//! The process-global reaper: the only place in the process that calls `wait*` for
//! children.
//!
//! A dedicated thread (started lazily on the first spawn, or by
//! [`set_child_subreaper`](crate::set_child_subreaper)) waits on one pidfd per registered
//! child with epoll, and reaps a child when its pidfd says it exited
//! (`waitid(P_PIDFD, WNOHANG)`): the kernel does O(1) work per exit however many children
//! are alive. (`waitid(P_ALL)`, which this replaced, walks the whole child list on every
//! wake-up; with 10,000 live sandboxes that walk was most of a lifecycle's cost.)
//!
//! The pidfds must not grow the process's fd table, which every spawn copies into the child
//! and closes again at `execve`: the reaper thread therefore works in a **private fd
//! table** (`unshare(CLONE_FILES)`), holding only its epoll fd, its pidfds and its copy of
//! the wake-up eventfd (and 0, 1, 2 as inherited). Any fd number some other code of the
//! process opened is, in that table, closed or one of the reaper's own pidfds, and a file
//! opened from that thread would exist only there. So the reaper thread runs no code that
//! might use such an fd: it never wakes another thread's futures (a tokio waker may write
//! to the runtime's eventfd) and **never logs** (a `tracing` subscriber may write to a log
//! file's fd, or open the next file of a rolling log). It hands each status, and each line
//! it wants logged, to a **delivery thread** in the shared table, which logs the line, fills
//! the registered [`Process`](crate::Process)'s exit slot or broadcasts an [`OrphanExit`].
//! (One thing it cannot route: a panic in the reaper thread runs the panic hook there; the
//! default hook writes to fd 2, which the private table keeps.)
//!
//! Start-up failures and a dead reaper are errors, not panics: see the `start` module,
//! [`start_reaper`] and [`reaper_health`].
//!
//! Children it did not spawn (descendants reparented to us because we are a subreaper) have
//! no pidfd here: a sweep with `waitid(P_ALL, WNOHANG | WNOWAIT)` every
//! [`ORPHAN_SWEEP`] finds them (a zombie does not keep a cgroup populated, so this delay
//! never holds up a stop).
//!
//! The spawner holds the table lock from the clone until the child is inserted, so the
//! reaper can never reap a child before it is registered, and [`Process::signal`] holds it
//! while it opens a pidfd by pid (when the `Process` holds none), so a registered pid is
//! never reused under it.
//!
//! A registered child reaped by something else (`SIGCHLD` ignored or `SA_NOCLDWAIT`, or a
//! foreign `wait*`) is noticed when its pidfd polls readable and `waitid(P_PIDFD)` says
//! `ECHILD` (or `pidfd_open` says `ESRCH`, or the sweep finds no child at all): its entry
//! is removed and its waiters get `ExitStatus::Unknown`.
//!
//! [`Process::signal`]: crate::Process::signal
//!
//! Why one file of over 600 lines: the sweep, `reap_orphans_of` and the child table share
//! one lock and one invariant (a child is reaped only under it, by the reaper or a sweep);
//! start-up and health are already in `reaper/start.rs`.

mod start;

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::epoll;

use tokio::sync::{Notify, broadcast};

pub(crate) use self::start::ensure_started;
pub use self::start::{ReaperHealth, reaper_health, start_reaper};
use self::start::{ReaperLog, log};
use crate::{ExitStatus, sys};

/// Exit of a process that was not spawned by this crate's spawner (typically a descendant
/// reparented to us because we are a child subreaper), reaped by the reaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrphanExit {
    /// Its pid (already reaped: the number may be reused from now on).
    pub pid: i32,
    /// How it ended.
    pub status: ExitStatus,
}

/// Where the reaper delivers one registered child's exit status.
#[derive(Debug, Default)]
pub(crate) struct ExitSlot {
    status: Mutex<Option<ExitStatus>>,
    cv: Condvar,
    notify: Notify,
}

impl ExitSlot {
    pub(crate) fn get(&self) -> Option<ExitStatus> {
        *lock(&self.status)
    }

    fn deliver(&self, st: ExitStatus) {
        *lock(&self.status) = Some(st);
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    pub(crate) fn wait_blocking(&self, timeout: Option<Duration>) -> Option<ExitStatus> {
        let mut g = lock(&self.status);
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if let Some(s) = *g {
                return Some(s);
            }
            match deadline {
                None => g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    g = self
                        .cv
                        .wait_timeout(g, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    pub(crate) async fn wait(&self) -> ExitStatus {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register interest before checking, so a delivery in between is not lost.
            notified.as_mut().enable();
            if let Some(s) = self.get() {
                return s;
            }
            notified.await;
        }
    }
}

pub(crate) struct Table {
    children: HashMap<i32, Arc<ExitSlot>>,
    /// Registered children the reaper thread has not opened a pidfd for yet.
    new: Vec<(i32, Arc<ExitSlot>)>,
}

impl Table {
    /// Whether `pid` is registered with exactly `slot`, that is, still the unreaped child
    /// the slot was made for (a reused pid would be registered with another slot).
    pub(crate) fn holds(&self, pid: i32, slot: &Arc<ExitSlot>) -> bool {
        self.children
            .get(&pid)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Register a freshly cloned (not yet reaped) child. Must be called with the lock that
    /// was held across the clone; call [`wake`] after releasing it.
    pub(crate) fn insert(&mut self, pid: i32) -> Arc<ExitSlot> {
        let slot = Arc::new(ExitSlot::default());
        if let Some(old) = self.children.insert(pid, slot.clone()) {
            // The pid was reused while an earlier child with it was still registered: that
            // child was reaped outside this crate and its exit not noticed yet.
            warn_lost(pid);
            old.deliver(ExitStatus::Unknown);
        }
        self.new.push((pid, slot.clone()));
        slot
    }
}

/// How often the reaper sweeps for exited children that have no pidfd here (orphans
/// reparented to a subreaper, or children started by other means).
pub const ORPHAN_SWEEP: Duration = Duration::from_secs(1);

/// What the reaper thread hands to the delivery thread.
enum Delivery {
    Child(Arc<ExitSlot>, ExitStatus),
    Orphan(OrphanExit),
    /// Sweeps up to this generation are done (see [`reap_orphans`]).
    Swept(u64),
    /// A line the reaper thread wants logged (see [`ReaperLog`]).
    Log(ReaperLog),
}

struct Reaper {
    table: Mutex<Table>,
    /// Wakes the reaper thread (new children); an eventfd of the shared fd table, of which
    /// the reaper thread polls its own copy. Set once, by the start-up that succeeds.
    wake_fd: OnceLock<OwnedFd>,
    orphans: broadcast::Sender<OrphanExit>,
    orphans_reaped: AtomicU64,
    children_reaped: AtomicU64,
    state: start::State,
    /// Sweep generations asked for by [`reap_orphans`], and done.
    sweep_asked: AtomicU64,
    sweep_done: AtomicU64,
    swept: Notify,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

fn reaper() -> &'static Reaper {
    REAPER.get_or_init(|| Reaper {
        table: Mutex::new(Table {
            children: HashMap::new(),
            new: Vec::new(),
        }),
        wake_fd: OnceLock::new(),
        orphans: broadcast::channel(ORPHAN_CHANNEL_CAPACITY).0,
        orphans_reaped: AtomicU64::new(0),
        children_reaped: AtomicU64::new(0),
        state: start::State::new(),
        sweep_asked: AtomicU64::new(0),
        sweep_done: AtomicU64::new(0),
        swept: Notify::new(),
    })
}

/// Capacity of the orphan broadcast channel; slow subscribers lose the oldest events
/// (and see `RecvError::Lagged`).
pub const ORPHAN_CHANNEL_CAPACITY: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lock the child table (held by the spawner across clone → insert).
pub(crate) fn lock_table() -> MutexGuard<'static, Table> {
    lock(&reaper().table)
}

/// Tell the reaper thread that children were registered.
pub(crate) fn wake() {
    if let Some(fd) = reaper().wake_fd.get() {
        // A full counter (EAGAIN) already means "wake up".
        let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
    }
}

fn deliver(r: &'static Reaper, rx: std::sync::mpsc::Receiver<Delivery>) {
    for d in rx {
        match d {
            Delivery::Child(slot, status) => {
                r.children_reaped.fetch_add(1, Ordering::Relaxed);
                slot.deliver(status);
            }
            Delivery::Swept(generation) => {
                r.sweep_done.fetch_max(generation, Ordering::Release);
                r.swept.notify_waiters();
            }
            Delivery::Orphan(ev) => {
                r.orphans_reaped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pid = ev.pid, status = %ev.status, "reaped orphan");
                // No subscribers is fine.
                let _ = r.orphans.send(ev);
            }
            Delivery::Log(line) => line.emit(),
        }
    }
}

/// epoll data of the wake-up eventfd (pids are positive).
const WAKE: u64 = u64::MAX;

/// The reaper thread's loop, after its set-up (`start::set_up`): its epoll set `ep` and its
/// copy of the wake-up eventfd. Never returns.
fn run(
    r: &'static Reaper,
    ep: OwnedFd,
    wake: BorrowedFd<'static>,
    tx: std::sync::mpsc::Sender<Delivery>,
) {
    // pid → (pidfd, the slot of the child it was opened for).
    let mut pidfds: PidFds = HashMap::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut next_sweep = Instant::now() + ORPHAN_SWEEP;
    let mut swept = 0u64;
    loop {
        // New children: open their pidfds. Race-free outside the lock: they are registered
        // and unreaped, and only this thread reaps.
        let new: Vec<(i32, Arc<ExitSlot>)> = {
            let mut t = lock(&r.table);
            let new = std::mem::take(&mut t.new);
            new.into_iter()
                .filter(|(pid, slot)| t.holds(*pid, slot))
                .collect()
        };
        {
            for (pid, slot) in new {
                match sys::pidfd_open(pid) {
                    Ok(fd) => {
                        if let Err(e) = epoll::add(
                            &ep,
                            &fd,
                            epoll::EventData::new_u64(pid as u64),
                            epoll::EventFlags::IN,
                        ) {
                            log(&tx, ReaperLog::EpollAdd { pid, error: e });
                        }
                        pidfds.insert(pid, (fd, slot));
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                        // Registered and not reaped by us, yet gone (a zombie would still
                        // have a pid): the kernel or a foreign wait* reaped it.
                        lost(r, &tx, pid, &slot);
                    }
                    Err(e) => {
                        log(&tx, ReaperLog::PidfdOpen { pid, error: e });
                    }
                }
            }
        }
        let left = next_sweep.saturating_duration_since(Instant::now());
        let timeout = rustix::event::Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        events.clear();
        match epoll::wait(
            &ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                log(&tx, ReaperLog::EpollWait(e));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        for ev in &events {
            let data = ev.data.u64();
            if data == WAKE {
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(wake, &mut buf);
                continue;
            }
            let pid = data as i32;
            let Some((fd, _)) = pidfds.get(&pid) else {
                continue;
            };
            let mut t = lock(&r.table);
            match sys::reap_pidfd_nohang(fd.as_fd()) {
                Ok(Some(status)) => {
                    pidfds.remove(&pid);
                    let slot = t.children.remove(&pid);
                    drop(t);
                    match slot {
                        Some(slot) => {
                            let _ = tx.send(Delivery::Child(slot, status));
                        }
                        None => {
                            let _ = tx.send(Delivery::Orphan(OrphanExit { pid, status }));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    drop(t);
                    // It exited (its pidfd is readable) and is no longer our child:
                    // something else reaped it.
                    if let Some((_, slot)) = pidfds.remove(&pid) {
                        lost(r, &tx, pid, &slot);
                    }
                }
                Err(e) => {
                    drop(t);
                    pidfds.remove(&pid);
                    log(&tx, ReaperLog::WaitPidfd { pid, error: e });
                }
            }
        }
        let asked = r.sweep_asked.load(Ordering::Acquire);
        if asked > swept || Instant::now() >= next_sweep {
            sweep(r, &tx, &mut pidfds);
            next_sweep = Instant::now() + ORPHAN_SWEEP;
            if asked > swept {
                swept = asked;
                let _ = tx.send(Delivery::Swept(asked));
            }
        }
    }
}

/// Reaps every exited child the pidfds did not report: orphans, and (should a pidfd have
/// failed) registered children.
fn sweep(r: &'static Reaper, tx: &std::sync::mpsc::Sender<Delivery>, pidfds: &mut PidFds) {
    loop {
        let pid = match sys::wait_any_exited_nohang_nowait() {
            Ok(Some(pid)) => pid,
            Ok(None) => return,
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                forget_lost_children(r, tx, pidfds);
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log(tx, ReaperLog::SweepWaitid(e));
                return;
            }
        };
        let mut t = lock(&r.table);
        let status = match sys::reap(pid) {
            Ok(s) => s,
            Err(e) => {
                // Someone else reaped it between the peek and here (std::process /
                // tokio::process used in this process despite the crate docs). A
                // registered child is reported lost through its pidfd (which polls
                // readable) or, failing that, when no child is left.
                drop(t);
                log(tx, ReaperLog::VanishedBeforeReaping { pid, error: e });
                continue;
            }
        };
        pidfds.remove(&pid);
        match t.children.remove(&pid) {
            Some(slot) => {
                drop(t);
                let _ = tx.send(Delivery::Child(slot, status));
            }
            None => {
                drop(t);
                let _ = tx.send(Delivery::Orphan(OrphanExit { pid, status }));
            }
        }
    }
}

/// `pid` (registered or not) exited and was reaped by something else: remove its table
/// entry and wake its waiters with [`ExitStatus::Unknown`], so `wait` does not hang and
/// `signal` never uses the (possibly reused) pid.
fn lost(
    r: &'static Reaper,
    tx: &std::sync::mpsc::Sender<Delivery>,
    pid: i32,
    slot: &Arc<ExitSlot>,
) {
    let mut t = lock(&r.table);
    // Otherwise the pid was already reused and re-registered, and `Table::insert` has
    // reported this child.
    if t.holds(pid, slot) {
        t.children.remove(&pid);
        drop(t);
        log(tx, ReaperLog::ChildLost { pid });
        let _ = tx.send(Delivery::Child(slot.clone(), ExitStatus::Unknown));
    }
}

fn warn_lost(pid: i32) {
    tracing::warn!(
        pid,
        "reaper: child was reaped outside paddock-proc (SIGCHLD ignored or SA_NOCLDWAIT, \
         or a foreign wait*); its exit status is unknown"
    );
}

/// The reaper thread's pidfds: pid → (pidfd, the slot of the child it was opened for).
type PidFds = HashMap<i32, (OwnedFd, Arc<ExitSlot>)>;

/// The process has no children at all (`ECHILD` from `waitid(P_ALL)`): every registered
/// child, checked under the table lock (no spawn is between clone and registration then),
/// was reaped by something else.
fn forget_lost_children(
    r: &'static Reaper,
    tx: &std::sync::mpsc::Sender<Delivery>,
    pidfds: &mut PidFds,
) {
    let mut t = lock(&r.table);
    if t.children.is_empty() {
        return;
    }
    match sys::wait_any_exited_nohang_nowait() {
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {}
        _ => return,
    }
    let gone: Vec<(i32, Arc<ExitSlot>)> = t.children.drain().collect();
    t.new.clear();
    drop(t);
    for (pid, slot) in gone {
        pidfds.remove(&pid);
        log(tx, ReaperLog::ChildLost { pid });
        let _ = tx.send(Delivery::Child(slot, ExitStatus::Unknown));
    }
}

/// Reaps every orphan that has exited by the time of the call, and returns when that is
/// done. The reaper sweeps for orphans by itself only every [`ORPHAN_SWEEP`]; a supervisor
/// calls this after a stop that killed processes, so none of them is left as a zombie.
/// Costs one walk of this process's children.
///
/// Returns at once, having swept nothing, when the reaper cannot be started or has died
/// (see [`reaper_health`]).
pub async fn reap_orphans() {
    if ensure_started().is_err() {
        return;
    }
    let r = reaper();
    if sweep_orphans_here(r) {
        // Done without waiting: still count against the task's budget, so a caller that
        // loops on this yields to its runtime now and then (a timeout around it fires).
        tokio::task::consume_budget().await;
        return;
    }
    let generation = r.sweep_asked.fetch_add(1, Ordering::AcqRel) + 1;
    wake();
    loop {
        let swept = r.swept.notified();
        tokio::pin!(swept);
        swept.as_mut().enable();
        if r.sweep_done.load(Ordering::Acquire) >= generation || !reaper_health().is_healthy() {
            return;
        }
        swept.await;
    }
}

/// The fast path of [`reap_orphans`]: sweeps on the calling thread, under the table lock
/// as the reaper's own sweep does, reaping exited children that are not registered
/// (orphans; a registered child's pidfd belongs to the reaper thread). Returns `true` when
/// no exited child is left, `false` when the reaper must sweep: the first exited child is a
/// registered one its pidfd has not reported yet, the process has no child although some
/// are registered (lost children, see `forget_lost_children`), or `waitid` failed.
///
/// This spares the common stop two thread hand-offs (to the reaper, then to the delivery
/// thread) and their wake-ups. Only non-blocking calls: a peek (`WNOWAIT`), then a
/// `waitid(P_PID, WNOHANG)` of that pid under the lock. The caller is a normal thread with
/// the process's fd table, so it can log and broadcast the orphan's exit itself.
fn sweep_orphans_here(r: &'static Reaper) -> bool {
    loop {
        let pid = match sys::wait_any_exited_nohang_nowait() {
            Ok(Some(pid)) => pid,
            Ok(None) => return true,
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                return lock(&r.table).children.is_empty();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let t = lock(&r.table);
        if t.children.contains_key(&pid) {
            return false;
        }
        // Spawns clone and register under this lock, so an exited child that is not
        // registered while it is held is an orphan.
        let status = match sys::reap(pid) {
            Ok(s) => s,
            // Reaped by something else between the peek and the lock (see `sweep`).
            Err(_) => {
                drop(t);
                continue;
            }
        };
        drop(t);
        r.orphans_reaped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pid, status = %status, "reaped orphan");
        let _ = r.orphans.send(OrphanExit { pid, status });
    }
}

/// What [`reap_orphans_of`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanReap {
    /// How many sweeps it had the reaper make.
    pub sweeps: u32,
    /// How many orphans the reaper reaped meanwhile (those of other groups included).
    pub reaped: u64,
    /// How many of the group's processes it found still exiting and waited for.
    pub waited_for: usize,
    /// The group's processes that were still children of this process, unreaped, at the
    /// deadline (empty when it finished).
    pub left: Vec<i32>,
}

/// Reaps every orphan of a group of processes that has ended (a sandbox whose cgroup was
/// just emptied), and returns once none of them is left as a child of this process, zombie
/// or still exiting, or at `timeout`.
///
/// `belongs(pid)` says whether a child of this process (not one spawned through this crate,
/// whose [`Process`](crate::Process) reaps it) is one of the group's, for example by its
/// `/proc/<pid>/cgroup`. A process that has left its cgroup's member count is not done
/// exiting yet: its own children are handed to this process (a subreaper) only after that,
/// and only then does it become a zombie. So each round sweeps (as [`reap_orphans`]), then
/// lists this process's children (`/proc/self/task/*/children`), and waits (on pidfds) for
/// those of the group that are still exiting, until a round finds none of the group left.
/// Children of other groups are never waited for; exit statuses of spawned children are
/// never taken from their waiters.
pub async fn reap_orphans_of(belongs: impl Fn(i32) -> bool, timeout: Duration) -> OrphanReap {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rep = OrphanReap::default();
    let before = orphans_reaped();
    loop {
        reap_orphans().await;
        rep.sweeps += 1;
        rep.reaped = orphans_reaped() - before;
        let mut zombies = false;
        let mut exiting = Vec::new();
        for pid in own_children() {
            if lock(&reaper().table).children.contains_key(&pid) || !belongs(pid) {
                continue;
            }
            match crate::ForeignProcess::open(pid, None) {
                Ok(Some(p)) => exiting.push(p),
                // A zombie, or it exited since the list was read: the next sweep reaps it.
                Ok(None) => zombies = true,
                Err(e) => {
                    tracing::warn!(pid, error = %e, "reaper: cannot open a pidfd for an orphan");
                    zombies = true;
                }
            }
        }
        if exiting.is_empty() && !zombies {
            return rep;
        }
        rep.waited_for += exiting.len();
        for p in &exiting {
            if tokio::time::timeout_at(deadline, p.exited()).await.is_err() {
                break;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            reap_orphans().await;
            rep.sweeps += 1;
            rep.reaped = orphans_reaped() - before;
            rep.left = own_children()
                .into_iter()
                .filter(|pid| !lock(&reaper().table).children.contains_key(pid) && belongs(*pid))
                .collect();
            return rep;
        }
    }
}

/// The children of this process that may be orphans: those of the thread-group leader,
/// which is where the kernel hands orphans to a subreaper (`find_new_reaper` takes the
/// first thread of the group that is not exiting, and the leader is the first), or, when
/// the leader has exited (its `stat` shows it a zombie or dead, as after a
/// `pthread_exit` of the main thread), those of every thread
/// (`/proc/self/task/<tid>/children`). Reading one file instead of one per thread keeps
/// this cheap in a process with many threads.
///
/// The leader's `children` is read first: when it lists any, the leader has not exited
/// (an exiting thread hands its children to a live one before it becomes a zombie), so its
/// `stat` need not be read. Each file is read with one buffer (`read_proc`), not
/// `read_to_string`'s `statx` and growing reads: a stop that killed processes calls this
/// at least once before its outcome is out.
fn own_children() -> Vec<i32> {
    let leader = std::process::id();
    let mut out = Vec::new();
    let read = |tid: &str, out: &mut Vec<i32>| {
        if let Some(s) = read_proc(&format!("/proc/self/task/{tid}/children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    };
    read(&leader.to_string(), &mut out);
    if !out.is_empty() {
        return out;
    }
    let leader_alive = read_proc(&format!("/proc/self/task/{leader}/stat"))
        .and_then(|st| {
            // The state follows the parenthesised name, which may itself hold ") ".
            let rest = &st[st.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false);
    if leader_alive {
        return out;
    }
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            read(&t.file_name().to_string_lossy(), &mut out);
        }
    }
    out
}

/// The text of a small `/proc` file: `open` and `read`s into one buffer, nothing else
/// (`std::fs::read_to_string` adds an `fstat` and, as `/proc` files report size 0, starts
/// with a 32-byte read and grows). `None` if it cannot be opened or read, or is not UTF-8.
fn read_proc(path: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut buf = vec![0u8; 1024];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// Asks the reaper to sweep for exited orphans now, without waiting for it (see
/// [`reap_orphans`]). Does nothing when the reaper cannot be started or has died (see
/// [`reaper_health`]).
pub fn request_orphan_sweep() {
    if ensure_started().is_err() {
        return;
    }
    reaper().sweep_asked.fetch_add(1, Ordering::AcqRel);
    wake();
}

/// Subscribe to exits of orphans (unregistered descendants) reaped by the reaper.
///
/// Only events after the call are received. The channel is bounded
/// ([`ORPHAN_CHANNEL_CAPACITY`]); a subscriber that falls behind gets `Lagged`.
pub fn subscribe_orphans() -> broadcast::Receiver<OrphanExit> {
    reaper().orphans.subscribe()
}

/// Number of orphans (unregistered descendants) the reaper has reaped so far.
pub fn orphans_reaped() -> u64 {
    reaper().orphans_reaped.load(Ordering::Relaxed)
}

/// Number of registered (spawned by this crate) children the reaper has reaped so far.
pub fn children_reaped() -> u64 {
    reaper().children_reaped.load(Ordering::Relaxed)
}

/// Number of spawned children registered and not reaped yet.
pub fn children_running() -> usize {
    lock(&reaper().table).children.len()
}

/// Make this process a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`), so orphaned
/// descendants of spawned processes are reparented to it instead of to init, and start the
/// reaper so they are reaped (within [`ORPHAN_SWEEP`]; see [`subscribe_orphans`]).
///
/// Fails with the error of `prctl`, or with a [`SpawnError`](crate::SpawnError) from
/// starting the reaper (its errno's kind; the `SpawnError` is the source), in which case
/// the flag is set but nothing reaps the orphans until a later spawn starts the reaper.
pub fn set_child_subreaper() -> std::io::Result<()> {
    sys::set_child_subreaper()?;
    ensure_started().map_err(|e| {
        let kind = e.errno().map_or(std::io::ErrorKind::Other, |n| {
            std::io::Error::from_raw_os_error(n).kind()
        });
        std::io::Error::new(kind, e)
    })
}
