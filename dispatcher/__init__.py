"""Routes tasks from the intake priority queue to per-drone priority queues, and sweeps the
store for tasks that need attention: never routed, timed out, or past their ttl."""
