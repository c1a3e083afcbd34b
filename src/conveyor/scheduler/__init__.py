"""Schedules: cron expressions (and, later, the ticker that fires them)."""
