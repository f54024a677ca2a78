"""The scheduler: moves PENDING tasks to ASSIGNED on a node, in batches (see scheduler.py)."""
