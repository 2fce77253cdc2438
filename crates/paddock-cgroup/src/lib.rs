//! paddock-cgroup
