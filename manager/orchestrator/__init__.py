"""Orchestrators: decide which tasks should exist (replicated slots, one per node for global),
restart them per policy, and reap old ones. Pure decisions live in functions over plain
protobuf objects; `reconciler.py` runs them against the store."""
