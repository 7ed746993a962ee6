"""Our own fault harness (`make chaos`): faults injected into the whole running service, and the
Jepsen-style counts of what was acked, lost, doubled, stuck or left indeterminate."""
