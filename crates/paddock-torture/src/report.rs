//! What a run found: the leaks, the summary of a run and how it is printed, and what one
//! lifecycle found before it is added to the summary.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::case::Case;
use crate::faults::Fault;

/// A leak: something left after a stop that reported success.
#[derive(Debug, Clone, Serialize)]
pub struct Leak {
    /// Lifecycle number in this run (`None`: found by the final walk).
    pub lifecycle: Option<u64>,
    /// Sandbox ID.
    pub sandbox: String,
    /// Payload case.
    pub case: Option<Case>,
    /// Injected fault.
    pub fault: Option<Fault>,
    /// `process` or `cgroup`.
    pub kind: &'static str,
    /// What was found.
    pub detail: String,
}

/// The result of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The seed used.
    pub seed: u64,
    /// Concurrency used.
    pub concurrency: usize,
    /// Whether every lifecycle ran jailed ([`crate::Options::jailed`]).
    pub jailed: bool,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Lifecycles run to the end and checked.
    pub lifecycles_completed: u64,
    /// Lifecycles per case.
    pub per_case: BTreeMap<String, u64>,
    /// Lifecycles per fault.
    pub per_fault: BTreeMap<String, u64>,
    /// Processes killed after the grace period (supervisor counter `killed_after_grace`).
    pub processes_killed_after_grace: u64,
    /// Processes killed by stops with no grace period (supervisor counter
    /// `killed_without_grace`).
    pub processes_killed_without_grace: u64,
    /// Removals that found the cgroup busy and fell back to `cgroup.kill` (root counter).
    pub ebusy_fallbacks: u64,
    /// `cgroup.kill` rewrites because the first write left a survivor (root counter).
    pub kill_rewrites: u64,
    /// Stops that ended in quarantine.
    pub quarantines: u64,
    /// Quarantines that drained (sandbox removed after the stuck process went).
    pub quarantines_drained: u64,
    /// Starts that failed (including the deliberately bad ones).
    pub starts_failed: u64,
    /// Stops that ended `failed`.
    pub stops_failed: u64,
    /// Futures actually dropped before completing: start, stop, pause.
    pub cancelled: BTreeMap<String, u64>,
    /// Whether the sandboxes had the `pids` controller, so that fork storms ran under a
    /// `pids.max` of 32..=256 (otherwise only their own loop count bounds them).
    pub pids_controller: bool,
    /// Fork-storm lifecycles that ran.
    pub fork_storms: u64,
    /// Fork storms whose sandbox counted forks refused at `pids.max` before the stop
    /// (`max` in its `pids.events`).
    pub fork_storms_hit_pids_max: u64,
    /// What the `nested-cgroups` payload's write of a controller to its own
    /// `cgroup.subtree_control` (after moving its processes into a leaf) did, as the
    /// payload logged it: `ok +<controller>`, `failed +<controller>`, or `none offered`.
    pub nested_subtree_control: BTreeMap<String, u64>,
    /// The most descendant cgroups one `nested-cgroups` lifecycle (variant 2) created.
    pub nested_max_descendants_made: u64,
    /// Starts with a FIFO, socket or leased stdio target (`stdio-fifo`, `stdio-hung`) that
    /// were refused, and the slowest refusal in milliseconds.
    pub stdio_refusals: u64,
    /// The slowest of those refusals, milliseconds.
    pub stdio_refusal_max_ms: f64,
    /// `zombie-storm` lifecycles that ran.
    pub zombie_storms: u64,
    /// The most double-forked daemons one `zombie-storm` payload logged it made.
    pub zombie_storm_max_daemons: u64,
    /// The most zombies (children of this process in the sandbox's cgroups) one
    /// `zombie-storm` lifecycle had just before its stop.
    pub zombie_storm_max_zombies: u64,
    /// The second supervisor on the same root, with an owner of its own, reclaiming
    /// during the run (see [`crate::Options::rival`]): `reclaim()` calls made.
    pub rival_reclaims: u64,
    /// Cgroups of this run's supervisor the rival's reclaims saw and left alone (as a live
    /// owner's), summed over its reclaims.
    pub rival_left_alone: u64,
    /// Sandboxes the rival ran (and stopped) beside the lifecycles.
    pub rival_sandboxes: u64,
    /// Leaks found (after each stop and in the final walk).
    pub leaks_found: u64,
    /// The leaks.
    pub leaks: Vec<Leak>,
    /// Other problems (unexpected states, hangs, inconsistent reports).
    pub errors: Vec<String>,
    /// Cases skipped, with why.
    pub skipped: Vec<String>,
    /// Whether the run was interrupted (Ctrl-C).
    pub interrupted: bool,
}

impl Summary {
    /// Human-readable summary lines.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let kv = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        s += &format!(
            "paddock-torture: seed {} concurrency {}{} elapsed {:.1}s{}\n",
            self.seed,
            self.concurrency,
            if self.jailed { " jailed" } else { "" },
            self.elapsed_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        s += &format!(
            "  lifecycles completed:          {}\n",
            self.lifecycles_completed
        );
        s += &format!("  per case:   {}\n", kv(&self.per_case));
        s += &format!("  per fault:  {}\n", kv(&self.per_fault));
        s += &format!(
            "  processes killed after grace:  {}\n",
            self.processes_killed_after_grace
        );
        s += &format!(
            "  processes killed, no grace:    {}\n",
            self.processes_killed_without_grace
        );
        s += &format!(
            "  EBUSY fallbacks:               {}\n",
            self.ebusy_fallbacks
        );
        s += &format!("  cgroup.kill rewrites:          {}\n", self.kill_rewrites);
        s += &format!(
            "  quarantines:                   {} (drained {})\n",
            self.quarantines, self.quarantines_drained
        );
        s += &format!("  starts failed:                 {}\n", self.starts_failed);
        s += &format!("  stops failed:                  {}\n", self.stops_failed);
        s += &format!("  futures cancelled:  {}\n", kv(&self.cancelled));
        s += &format!(
            "  fork storms hitting pids.max:  {} of {}{}\n",
            self.fork_storms_hit_pids_max,
            self.fork_storms,
            if self.pids_controller {
                " (pids.max 32..=256)"
            } else {
                " (no pids controller here: bounded by their loop count)"
            }
        );
        s += &format!(
            "  nested subtree_control writes: {}\n",
            kv(&self.nested_subtree_control)
        );
        s += &format!(
            "  nested descendants made (max): {}\n",
            self.nested_max_descendants_made
        );
        s += &format!(
            "  stdio targets refused:         {} (slowest {:.1} ms)\n",
            self.stdio_refusals, self.stdio_refusal_max_ms
        );
        s += &format!(
            "  zombie storms:                 {} (most daemons {}, most zombies before a stop {})\n",
            self.zombie_storms, self.zombie_storm_max_daemons, self.zombie_storm_max_zombies
        );
        s += &format!(
            "  rival supervisor:              {} reclaims, {} of this run's cgroups seen and left alone, {} sandboxes of its own\n",
            self.rival_reclaims, self.rival_left_alone, self.rival_sandboxes
        );
        for sk in &self.skipped {
            s += &format!("  skipped: {sk}\n");
        }
        for e in &self.errors {
            s += &format!("  ERROR: {e}\n");
        }
        for l in &self.leaks {
            s += &format!(
                "  LEAK: {} {} (lifecycle {:?}, case {:?}, fault {:?}): {}\n",
                l.kind, l.sandbox, l.lifecycle, l.case, l.fault, l.detail
            );
        }
        s += &format!("  leaks found:                   {}\n", self.leaks_found);
        s
    }

    /// The process exit code: 1 on any leak, 2 on other errors, 0 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.leaks_found > 0 {
            1
        } else if !self.errors.is_empty() {
            2
        } else {
            0
        }
    }
}

/// What one lifecycle found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) leaks: Vec<Leak>,
    pub(crate) errors: Vec<String>,
    /// A fork storm that ran; whether it hit `pids.max` before the stop.
    pub(crate) storm: Option<bool>,
    /// The nested payload's `cgroup.subtree_control` result (variant 0) and the
    /// descendants it made (variant 2).
    pub(crate) nested: Option<(Option<String>, u64)>,
    /// A refused start (`stdio-fifo`, `stdio-hung`): how long the refusal took, ms.
    pub(crate) refused_ms: Option<f64>,
    /// A zombie storm: the daemons it logged it made, the zombies seen before the stop.
    pub(crate) zombies: Option<(u64, u64)>,
}

impl Summary {
    /// Adds a finished lifecycle of `case` with `fault` and what it found.
    pub(crate) fn record(&mut self, case: Case, fault: Fault, out: Outcome) {
        self.lifecycles_completed += 1;
        *self.per_case.entry(case.name().into()).or_default() += 1;
        *self.per_fault.entry(format!("{fault:?}")).or_default() += 1;
        self.leaks.extend(out.leaks);
        self.errors.extend(out.errors);
        if let Some(hit) = out.storm {
            self.fork_storms += 1;
            self.fork_storms_hit_pids_max += u64::from(hit);
        }
        if let Some(t) = out.refused_ms {
            self.stdio_refusals += 1;
            self.stdio_refusal_max_ms = self.stdio_refusal_max_ms.max(t);
        }
        if let Some((made, zombies)) = out.zombies {
            self.zombie_storms += 1;
            self.zombie_storm_max_daemons = self.zombie_storm_max_daemons.max(made);
            self.zombie_storm_max_zombies = self.zombie_storm_max_zombies.max(zombies);
        }
        if let Some((sc, made)) = out.nested {
            if let Some(sc) = sc {
                *self.nested_subtree_control.entry(sc).or_default() += 1;
            }
            self.nested_max_descendants_made = self.nested_max_descendants_made.max(made);
        }
    }
}
