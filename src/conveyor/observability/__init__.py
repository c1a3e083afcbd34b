"""Logs, metrics and traces: used by every layer, importing none of them (only the leaves)."""
