"""Dagster definitions for tagrec: resources, jobs, schedules and the demo runner."""
