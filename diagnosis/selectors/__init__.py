"""Reads: permission-scoped querysets. One module per area."""
