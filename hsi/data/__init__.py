"""Sensor band tables and defaults shipped with hsi (CSV/JSON; see README.md here)."""
