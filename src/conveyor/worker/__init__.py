"""Thin shells that advance runs: the pull worker and ``drain``."""
