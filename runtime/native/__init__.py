"""Native parts: the per-container shim (C) and the cffi extension."""
