"""What every ``hsi`` command shares: exit codes, the ``-c/--config`` option, one-line mistakes, output.

Never imports prefect: a mistake must be answered before any orchestration machinery starts.

Exit codes (also in ``hsi --help`` and the README):

====  ============================================================================
0     done (including "skipped (up to date)")
1     the work failed (the reason is printed on one line)
2     usage or configuration mistake (bad option, parameter, configuration, input)
3     partial: some of several units failed (``hsi run``, several ids)
4     not found: a file, item id or product name does not exist (close matches are suggested)
5     a service (catalog, object store, Prefect API) could not be reached; retry later
====  ============================================================================
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "EXIT_CODES_HELP",
    "ConfigOpt",
    "config_arg",
    "exit_code_for",
    "fail",
    "load",
    "report_error",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5

EXIT_CODES_HELP = (
    "Exit codes: 0 done (or skipped, up to date) · 1 the work failed · 2 usage/configuration mistake · "
    "3 partial (some of several failed) · 4 not found (file, item id, product; close matches suggested) · "
    "5 a service could not be reached (retry later)."
)


class _State:
    debug = False
    verbose = 0


STATE = _State()


def exit_code_for(e: BaseException) -> int:
    """The documented exit code of an exception (hsi.errors families, CLI mistakes, anything else)."""
    from hsi.errors import HSIError, InvalidInputError, ItemNotFoundError, ProductError, TransientError

    if isinstance(e, TransientError):
        return EXIT_UNAVAILABLE
    if isinstance(e, ItemNotFoundError) or (isinstance(e, ProductError) and "unknown product" in str(e)):
        return EXIT_NOT_FOUND
    if isinstance(e, InvalidInputError):
        return EXIT_USAGE
    if isinstance(e, HSIError):
        return EXIT_FAILED
    return EXIT_FAILED


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    from hsi.errors import HSIError

    if isinstance(e, HSIError):
        return text
    return f"{type(e).__name__}: {text}"


def report_error(e: BaseException, prefix: str = "error") -> int:
    """Print ``e`` once, on one line (its traceback too with ``--debug``); return its exit code."""
    if STATE.debug:
        traceback.print_exception(e, file=sys.stderr)
    typer.secho(f"{prefix}: {_one_line(e)}", fg="red", err=True)
    return exit_code_for(e)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """A user mistake found by the CLI itself: print one line (no traceback) and exit with ``code``."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="settings file (hsi.yaml); default: $HSI_CONFIG, else the embedded default"
    ),
]


def config_arg(config: Path | None) -> str | None:
    """The configuration path to hand to flows (absolute), or None for $HSI_CONFIG / the default."""
    if config is None:
        env = os.environ.get("HSI_CONFIG") or None
        if env and not Path(env).is_file():
            fail(f"configuration file {env} (from $HSI_CONFIG) does not exist", EXIT_NOT_FOUND)
        return env
    if not config.is_file():
        fail(f"configuration file {config} does not exist (see `hsi config validate --help`)", EXIT_NOT_FOUND)
    return str(config.resolve())


def load(config: str | Path | None) -> Any:
    """The validated PipelineConfig (a ConfigError becomes one line per issue and exit code 2)."""
    from hsi.config import load_config
    from hsi.errors import ConfigError

    try:
        return load_config(config)  # registers the configured processors as products
    except ConfigError as e:
        issues = getattr(e, "issues", None)
        if not issues:
            raise
        for line in (str(i) for i in issues):
            typer.secho(f"error: {line}", fg="red", err=True)
        typer.secho(f"{len(issues)} configuration error(s); see `hsi config validate`", fg="red", err=True)
        raise typer.Exit(EXIT_USAGE) from e


def setup_logging(verbose: int, debug: bool) -> None:
    """Console output policy, set before Prefect configures logging.

    Default: Prefect's console handler shows warnings only (the CLI shows progress bars and one line
    per outcome); records still reach the Prefect API (the UI shows every log line). ``-v``: Prefect's
    normal console format at INFO; ``--debug``: DEBUG and tracebacks.
    """
    STATE.verbose, STATE.debug = verbose, debug
    level = "DEBUG" if debug else ("INFO" if verbose else "WARNING")
    if debug or verbose:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = level
    else:  # a level the user exported wins over the default
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", level)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "DEBUG" if debug else "INFO")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "hsi")
    # no usage telemetry from the ephemeral server (it prints an ERROR line when offline)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if debug or verbose:
        logging.getLogger("hsi").setLevel(logging.DEBUG if debug else logging.INFO)


class _QuietConsole(logging.Filter):
    """Default mode: drop failed-run records (the CLI prints the reason once) and tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if STATE.verbose or STATE.debug:
            return True
        if record.levelno >= logging.ERROR and record.name.startswith(
            ("prefect.flow_runs", "prefect.task_runs", "prefect.engine", "prefect.flow_engine",
             "prefect.task_engine")
        ):  # fmt: skip
            return False
        record.exc_info = None
        record.exc_text = None
        return True


def tame_console() -> None:
    """Install the default-mode filter on Prefect's console handler (call after importing prefect)."""
    for h in logging.getLogger().handlers:
        if type(h).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, _QuietConsole) for f in h.filters
        ):
            h.addFilter(_QuietConsole())
