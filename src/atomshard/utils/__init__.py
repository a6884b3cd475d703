"""Small helpers used across layers (atomic file writes, config dataclasses)."""
