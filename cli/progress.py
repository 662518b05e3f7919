"""Progress bars for the long steps of a flow run in this process (activation tiles, product windows,
on-demand scenes), fed by :func:`hsi_pipeline.tasks.runtime.report_progress`.

Shown on a terminal in the default mode only (``-v`` shows Prefect's log lines instead).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hsi_pipeline.cli.common import STATE

__all__ = ["progress_display"]


@contextmanager
def progress_display() -> Iterator[None]:
    """Show a bar per long step while the block runs (nothing when stderr is not a terminal)."""
    if STATE.verbose or STATE.debug or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from hsi_pipeline.tasks.runtime import set_progress_sink

    bars: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:

        def sink(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = bar.add_task(what, total=total)
            bar.update(bars[what], completed=done, total=total)

        set_progress_sink(sink)
        try:
            yield
        finally:
            set_progress_sink(None)
