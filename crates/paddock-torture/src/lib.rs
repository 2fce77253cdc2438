//! paddock-torture: runs hostile payloads through full sandbox lifecycles with the
//! supervisor library, injects library-level faults (racing stops, stop against main exit
//! and pause, kill during a graceful stop, futures dropped at await points), and checks
//! after every stop — without trusting paddock's bookkeeping — that no process and no
//! cgroup is left.
//!
//! The leak checks ([`check`]) read `/proc` and the cgroup filesystem directly: after each
//! stop the sandbox's cgroup directory must not exist, no other directory of that sandbox
//! may exist under the root, and no live process may carry the sandbox's
//! `TORTURE_TAG` in its environment (every PID the payload reported is checked, and all of
//! `/proc` is scanned). At the end the whole torture root is walked and `/proc` is scanned
//! for processes whose cgroup is under it.
//!
//! [`run`] is the library entry point; the `paddock-torture` binary wraps it.
//!
//! The modules: `runner` (the run and one lifecycle), `case` (the payload cases and the
//! spec each starts with; the scripts are in [`payloads`]), `faults` (the faults of a
//! lifecycle's start and stop), [`check`] (the independent checks), `report` (the
//! summary), `host` (freezer cgroups and network namespaces made outside the root).

mod case;
pub mod check;
mod faults;
mod host;
mod net;
pub mod payloads;
mod report;
mod runner;

pub use case::{Case, case_unavailable, jail_for, unavailable_jailed};
pub use check::check_id_containment;
pub use faults::Fault;
pub use host::{HostResources, V1_FREEZER, unkillable_unavailable};
pub use report::{Leak, Summary};
pub use runner::{Options, Rng, StopFlag, emergency_cleanup, run};
