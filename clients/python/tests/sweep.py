"""run-tests' sweep after the tests: every sandbox still known to the daemon is a leak of
the tests; each is killed and deleted, and the sweep exits 1 if there was any (0 if none,
2 if the daemon could not be asked)."""

import sys

from paddock_client import Client, NotFound, PaddockError


def main(socket: str) -> int:
    c = Client(socket, timeout=20)
    try:
        left = c.list_sandboxes()
    except PaddockError as e:
        print(f"sweep: cannot list the sandboxes: {e}", file=sys.stderr)
        return 2
    for s in left:
        print(f"sweep: LEFT BEHIND by the tests: sandbox {s.id} ({s.state}, lifecycle {s.lifecycle})", file=sys.stderr)
        try:
            c.kill_sandbox(s.id, lifecycle=s.lifecycle)
        except NotFound:
            continue
        except PaddockError as e:
            print(f"sweep: kill {s.id}: {e}", file=sys.stderr)
        try:
            c.delete_sandbox(s.id, lifecycle=s.lifecycle)
        except PaddockError as e:
            print(f"sweep: delete {s.id}: {e}", file=sys.stderr)
    if c.node_info().draining:
        print("sweep: LEFT BEHIND by the tests: the node is draining", file=sys.stderr)
        c.undrain_node()
        return 1
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
