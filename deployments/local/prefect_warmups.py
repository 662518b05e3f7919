"""What the warm processes (deployments/local/warm.py) prepare once in Prefect, instead of per run.

Each fix replaces a module attribute or one method of Prefect, only in our own long-lived
processes: the fork server (and the runs it forks) and the local process worker. Each is skipped
when the name it expects is absent, so Prefect's own behaviour is the fallback. Measured costs
and the profile that found them: docs/EVENTS.md ("The run's start, measured from inside").

* :func:`share_tls_contexts`: one verified TLS context per CA bundle for Prefect's clients;
* :func:`complete_prefect_models`: Prefect's client-schema validators built once;
* :func:`memoize_settings_environment`: the worker renders each settings object once.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Any

__all__ = [
    "PREFECT_SCHEMA_MODULES",
    "TLS_CLIENT_MODULES",
    "complete_prefect_models",
    "memoize_settings_environment",
    "share_tls_contexts",
]


#: Prefect modules that build a verified TLS context for every client they make (``ssl.create_default_context
#: (cafile=...)``: ~30 ms, loading the CA bundle each time; a run makes 4 to 6 of them: ~0.15 s of its
#: start, plus its events and log workers)
TLS_CLIENT_MODULES = (
    "prefect.client.orchestration",
    "prefect._internal.version_checking",
    "prefect._internal.websockets",
)


class _SharedTls:
    """The ``ssl`` module as those Prefect modules see it in the fork server's runs: a verified client
    context for a CA file is made once (in the server) and shared; every other call is ``ssl``'s own.
    A shared ``SSLContext`` is what ``ssl`` recommends for many connections; Prefect only reads it."""

    def __init__(self) -> None:
        import ssl

        self._ssl = ssl
        self._made: dict[tuple[str, int, int], Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ssl, name)

    def create_default_context(self, purpose: Any = None, *, cafile: str | None = None, capath: str | None = None,
                               cadata: Any = None) -> Any:  # fmt: skip
        ssl = self._ssl
        purpose = ssl.Purpose.SERVER_AUTH if purpose is None else purpose
        if cafile is None or capath is not None or cadata is not None or purpose != ssl.Purpose.SERVER_AUTH:
            return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)
        st = os.stat(cafile)
        key = (os.path.realpath(cafile), st.st_size, st.st_mtime_ns)  # a changed bundle is loaded again
        ctx = self._made.get(key)
        if ctx is None:
            ctx = self._made[key] = ssl.create_default_context(purpose, cafile=cafile)
        return ctx


def share_tls_contexts() -> None:
    """Give :data:`TLS_CLIENT_MODULES` a :class:`_SharedTls` and load the default CA bundle once, here
    (the runs forked from the server inherit it). A module that is missing or has no ``ssl`` is skipped."""
    shared = _SharedTls()
    for name in TLS_CLIENT_MODULES:
        mod = sys.modules.get(name) or _try_import(name)
        if mod is not None and getattr(mod, "ssl", None) is shared._ssl:
            setattr(mod, "ssl", shared)  # noqa: B010 - replacing a module global
    try:  # the bundles Prefect's clients use: its setting (SSL_CERT_FILE sets it too), else certifi's
        import certifi
        from prefect.settings import PREFECT_API_SSL_CERT_FILE

        for bundle in {PREFECT_API_SSL_CERT_FILE.value() or certifi.where(), certifi.where()}:
            shared.create_default_context(cafile=bundle)
    except (ImportError, OSError, shared.SSLError) as e:  # made per client then, as without the server
        print(f"hsi warm start: CA bundle not preloaded ({e})", file=sys.stderr, flush=True)


#: Prefect's client schemas: pydantic builds most of their validators on first use, in every run
PREFECT_SCHEMA_MODULES = ("prefect.client.schemas.objects", "prefect.client.schemas.responses",
                          "prefect.client.schemas.actions")  # fmt: skip


def complete_prefect_models() -> int:
    """Build the validators of Prefect's client schemas here, once (88 models, ~60 ms), instead of in
    each run (reading its flow run, deployment and work queue built theirs: ~30 ms a run). Returns
    how many were built."""
    import inspect

    import pydantic

    built = 0
    for name in PREFECT_SCHEMA_MODULES:
        mod = _try_import(name)
        for cls in vars(mod).values() if mod is not None else ():
            if (inspect.isclass(cls) and issubclass(cls, pydantic.BaseModel) and cls.__module__ == name
                    and not cls.__pydantic_complete__):  # fmt: skip
                with contextlib.suppress(Exception):  # left to be built on first use, as without the server
                    cls.model_rebuild()
                    built += 1
    return built


def _try_import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def memoize_settings_environment() -> None:
    """Prefect's ``Settings.to_environment_variables`` computed once per settings object and arguments.

    A process worker renders its settings into every run's environment twice per submitted run
    (the job's base environment, the engine command), ~0.1 s each on this machine. A settings
    object is not changed in place (``temporary_settings`` makes new ones), so its rendering is
    kept with a reference to it (an id is never reused while kept) and a copy handed out."""
    from prefect.settings.base import PrefectBaseSettings

    original = PrefectBaseSettings.to_environment_variables
    if getattr(original, "hsi_memo", False):
        return
    memo: dict[tuple[int, bool, bool, bool], tuple[object, dict[str, str]]] = {}

    def to_environment_variables(
        self: Any, exclude_unset: bool = False, include_secrets: bool = True, include_aliases: bool = False
    ) -> dict[str, str]:
        key = (id(self), exclude_unset, include_secrets, include_aliases)
        hit = memo.get(key)
        if hit is None or hit[0] is not self:
            hit = memo[key] = (self, original(self, exclude_unset, include_secrets, include_aliases))
            while len(memo) > 256:  # settings objects of finished runs' contexts
                memo.pop(next(iter(memo)))
        return dict(hit[1])

    to_environment_variables.hsi_memo = True  # type: ignore[attr-defined]
    PrefectBaseSettings.to_environment_variables = to_environment_variables  # type: ignore[method-assign]
