"""`make bench`: enqueue and dispatch measured beside this machine's limits and pgqueuer."""
