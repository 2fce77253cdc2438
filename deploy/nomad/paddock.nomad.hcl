# paddock as a Nomad system job: one daemon on every eligible client (docs/deploy.md#nomad).
#
#   nomad job run -var 'paddock_binary=/usr/local/bin/paddock' deploy/nomad/paddock.nomad.hcl
#
# Needs: Linux clients with cgroup v2, the raw_exec driver enabled on them
# (`plugin "raw_exec" { config { enabled = true } }` in the client's configuration), the
# Nomad client running as root (it does by default), and the paddock binary on every
# client at var.paddock_binary (install it with your configuration management or the
# .deb, or fetch it with an `artifact` block; see below). Checked in CI by
# scripts/validate-manifests (parsed with python-hcl2, structure asserted).
#
# Why raw_exec: paddock is a node agent, like the orchestrator it replaces. It needs the
# host's cgroup tree, PID, mount and network namespaces, and runs its payloads as root
# with full capabilities; the isolating drivers (exec, docker) would confine the daemon
# and, through inheritance, every sandbox (see docs/systemd.md, "Hardening").
#
# ---- Where the sandboxes live, and why they survive a job update ------------------------
#
# Nomad puts each raw_exec task in a cgroup of its own (cgroup v2: under the client's
# cgroup_parent, by default nomad.slice: nomad.slice/share.slice/<alloc>.<task>.scope on
# Nomad 1.7 and later). When the allocation stops, Nomad kills that cgroup. So the
# sandboxes must NOT live in it: the daemon runs with `--cgroup-root paddock`, i.e.
# <cgroup2 mount>/paddock (relative roots are taken under the cgroup2 mount, so the same
# flag works on hybrid hosts, where the mount is /sys/fs/cgroup/unified), a cgroup outside
# nomad.slice, and spawns each sandbox straight into its own cgroup there
# (CLONE_INTO_CGROUP). Never run it with `--delegated` under Nomad: that would put the
# sandboxes under the task's scope, and every job update would kill them. On systemd
# hosts the sturdier root is a cgroup systemd delegates: install paddock.slice and
# paddock-sandboxes.service from deploy/systemd (not paddock.service) and set
# var.cgroup_root = "paddock.slice/paddock-sandboxes.service/sandboxes".
#
# A job update (a new binary, new flags) replaces the allocation on each client, one
# client at a time (update.max_parallel = 1): Nomad sends kill_signal (SIGTERM) to the
# task; the daemon stops listening, finishes the requests in flight, flushes its state
# and exits WITHOUT stopping its sandboxes (no --stop-sandboxes-on-exit: never add it
# here). Nomad then starts the new allocation; the new daemon opens the same state
# directory and cgroup root, re-opens each running sandbox (by PID and start time, and
# its cgroup by path) and only then answers (/readyz 200). The sandboxes keep running
# throughout: same processes, same cgroups; the API is down between the two daemons.
#
# The process group. Once the task's main process has exited, Nomad's executor also
# sends SIGKILL to the task's process group (it starts raw_exec tasks with setpgid). That
# does not reach the sandboxes: the daemon starts each sandbox's main process in a
# session and process group of its own (setsid in the child, before exec), so the
# daemon can be the task's main process. (Daemons before that change needed a setsid
# wrapper here.)
#
# `nomad job stop paddock` and draining a Nomad client stop the allocation the same way:
# the sandboxes keep running, and the next allocation on that client adopts them. To end
# them, stop them through the API first (`paddock drain --stop`, docs/deploy.md).

variable "paddock_binary" {
  type        = string
  default     = "/usr/local/bin/paddock"
  description = "Absolute path of the paddock binary on every client."
}

variable "cgroup_root" {
  type        = string
  default     = "paddock"
  description = "paddock serve --cgroup-root: outside the allocation's cgroup (relative: under the cgroup2 mount)."
}

variable "extra_args" {
  type        = list(string)
  default     = []
  description = "More `paddock serve` flags, e.g. [\"--listen\", \"10.0.0.5:7070\", \"--token-file\", \"/etc/paddock/token\"]; /etc/paddock/config.toml is read as well."
}

job "paddock" {
  type = "system"
  # Before other jobs' tasks if the cluster is full; a node agent.
  priority = 90

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # One client at a time; a client's sandboxes are untouched by its update (above).
  # Nomad versions without deployments for system jobs enforce only max_parallel and
  # stagger; the others also wait for min_healthy_time before the next client.
  update {
    max_parallel     = 1
    stagger          = "30s"
    health_check     = "task_states"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    auto_revert      = true
  }

  group "paddock" {
    # A node agent never gives up: after 10 failed starts in 5 minutes it waits out the
    # interval and tries again (mode "delay"), rather than failing the allocation.
    restart {
      attempts = 10
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "paddock" {
      driver = "raw_exec"

      config {
        command = var.paddock_binary
        args = concat([
          "serve",
          "--cgroup-root", var.cgroup_root,
          "--state-dir", "/var/lib/paddock",
          "--socket", "/run/paddock/paddock.sock",
        ], var.extra_args)
      }

      # SIGTERM: the daemon's graceful exit that leaves the sandboxes running. Nomad waits
      # kill_timeout for it, then SIGKILLs the task's process group and cgroup (the
      # daemon, not the sandboxes). 30s as paddock.service's TimeoutStopSec; the client's
      # max_kill_timeout (default 30s) caps it.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      # What the daemon itself uses; the sandboxes are accounted in their own cgroups,
      # outside this allocation, so reserve room for them in the client's
      # reserved { memory, cpu } instead (and paddock's --reserve-memory/--reserve-cpus
      # for what the host keeps).
      resources {
        cpu    = 200
        memory = 512
      }
    }
  }
}
