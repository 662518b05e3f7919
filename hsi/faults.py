"""Deterministic fault points for the fault matrix (tests/faults/): zero cost unless ``HSI_FAULT`` is set.

``HSI_FAULT=<point>`` makes the process die at that point, like ``kill -9`` (``os._exit(137)``: no
``finally``, no ``atexit``); ``HSI_FAULT_MODE=raise`` raises :class:`InjectedFault` instead (a crash
that Python code sees). Points, in the order an activation reaches them:

``after-download``  raw scene staged locally, before conversion
``mid-cog``         the COG writer has written half of the tiles
``mid-upload``      the first part of a multipart upload is stored, the others not
``after-upload``    assets uploaded, before the item is registered
``mid-register``    a static catalog item file written, its collection links not yet refreshed
``after-register``  item registered (the commit point), before the event is emitted
"""

from __future__ import annotations

import os

__all__ = ["FAULT_ENV", "FAULT_POINTS", "InjectedFault", "fault_point"]

FAULT_ENV = "HSI_FAULT"
FAULT_POINTS = ("after-download", "mid-cog", "mid-upload", "after-upload", "mid-register", "after-register")


class InjectedFault(RuntimeError):
    """Raised at a fault point when ``HSI_FAULT_MODE=raise``."""


def fault_point(name: str) -> None:
    """Die (or raise) here when ``$HSI_FAULT`` names this point; otherwise do nothing."""
    if os.environ.get(FAULT_ENV) != name:
        return
    if os.environ.get("HSI_FAULT_MODE") == "raise":
        raise InjectedFault(f"injected fault at {name}")
    os._exit(137)
