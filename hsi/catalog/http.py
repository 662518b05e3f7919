"""HTTP to one STAC API: credentials, retries and errors (the transport of :mod:`hsi.catalog.stacapi`).

Failures: 5xx answers and connection errors are retried with exponential backoff, then raise
:class:`CatalogUnavailableError` (transient); any other non-success answer (401, 403, 4xx) raises
:class:`CatalogError` at once. Messages name the URL and the HTTP status, never a credential.

Credentials (bearer token or basic user/password) are read from environment variables whose
*names* the configuration gives. They are attached by a transport adapter at send time, only for
requests to the catalog's own origin, so they appear neither in debug logs of the request
(pystac-client logs prepared headers) nor in redirects to other hosts.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from hsi.config import CatalogAuth
from hsi.errors import CatalogError, CatalogUnavailableError

__all__ = ["StacHttp"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 8.0


class _AuthAdapter(HTTPAdapter):
    """Adds the Authorization header at send time, only for the catalog's origin."""

    def __init__(self, origin: str, header: str | None, **kw: Any) -> None:
        self._origin = origin
        self._header = header
        super().__init__(**kw)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if self._header and request.url and _origin(request.url) == self._origin:
            request.headers["Authorization"] = self._header
        return super().send(request, *args, **kwargs)


def _origin(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}".lower()


def _auth_header(url: str, auth: CatalogAuth | None) -> tuple[str | None, list[str]]:
    """(Authorization header value, secret strings to scrub from messages)."""
    if auth is None:
        return None, []

    def env(name: str | None, what: str) -> str:
        if not name:
            raise CatalogError(url, f"{auth.type} auth configured without the env var name of its {what}")
        value = os.environ.get(name)
        if not value:
            raise CatalogError(url, f"{auth.type} auth: environment variable {name} ({what}) is not set")
        return value

    if auth.type == "bearer":
        token = env(auth.token_env, "token")
        return f"Bearer {token}", [token]
    user = env(auth.username_env, "username")
    password = env(auth.password_env, "password")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {basic}", [password, basic]


class StacHttp:
    """Requests to the STAC API at ``url`` (http or https, no credentials in it)."""

    def __init__(
        self,
        url: str,
        *,
        auth: CatalogAuth | dict[str, Any] | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        session: requests.Session | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise CatalogError(url, "a STAC API URL must start with http:// or https://")
        u = urlsplit(url)
        if u.username or u.password:
            raise CatalogError(
                f"{u.scheme}://{u.hostname}", "credentials in the URL are not allowed; use auth"
            )
        self.url = url.rstrip("/")
        self.timeout = float(timeout_s)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff_s)
        if isinstance(auth, dict):
            auth = CatalogAuth.model_validate(auth)
        self._auth_value, self._secrets = _auth_header(self.url, auth)
        self.session = session or requests.Session()
        self.session.mount(self.origin, self.adapter(max_retries=0))
        self.session.headers.setdefault("Accept", "application/json")

    @property
    def origin(self) -> str:
        return _origin(self.url)

    def adapter(self, max_retries: Any) -> HTTPAdapter:
        """A transport adapter that authenticates requests to this API's origin (for other sessions,
        e.g. pystac-client's)."""
        return _AuthAdapter(self.origin, self._auth_value, max_retries=max_retries)

    def request(self, method: str, url: str, body: Any = None) -> requests.Response:
        """Send with retries on connection errors and 5xx; returns any non-5xx response."""
        attempts = self.retries + 1
        last: str = ""
        status: int | None = None
        for attempt in range(attempts):
            if attempt:
                delay = min(_MAX_BACKOFF_S, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                log.info(  # the final error says it all; each retry is detail (-v)
                    "%s %s failed (%s); retry %d/%d in %.2f s",
                    method,
                    url,
                    last,
                    attempt,
                    self.retries,
                    delay,
                )
                time.sleep(delay)  # backoff between retries (not synchronisation)
            try:
                resp = self.session.request(method, url, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                last, status = f"connection error: {type(e).__name__}", None
                continue
            except requests.RequestException as e:
                raise CatalogError(url, f"{method} failed: {type(e).__name__}") from e
            if resp.status_code >= 500:
                last, status = f"HTTP {resp.status_code}", resp.status_code
                continue
            return resp
        what = "cannot reach the STAC API" if status is None else "the STAC API keeps failing"
        raise CatalogUnavailableError(
            self.url if status is None else url,
            f"{what}: {method} failed after {attempts} attempts ({last})",
            status,
        )

    def status(self, method: str, url: str) -> int | None:
        """The HTTP status of ``method url``, or None when the API cannot be reached."""
        try:
            return self.request(method, url).status_code
        except CatalogError:
            return None

    def raise_for(self, resp: requests.Response, url: str, what: str) -> None:
        code = resp.status_code
        if 200 <= code < 300:
            return
        if code == 401:
            raise CatalogError(url, f"{what}: not authorized (check the catalog credentials)", code)
        if code == 403:
            raise CatalogError(url, f"{what}: forbidden", code)
        detail = ""
        try:
            data = resp.json()
            if isinstance(data, dict):
                detail = str(data.get("description") or data.get("detail") or data.get("code") or "")
        except ValueError:
            detail = resp.text[:200]
        raise CatalogError(url, f"{what} refused" + (f": {self.scrub(detail)[:300]}" if detail else ""), code)

    def json(self, resp: requests.Response, url: str) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError as e:  # requests' JSONDecodeError is a ValueError
            raise CatalogError(url, "malformed JSON in the response", resp.status_code) from e
        if not isinstance(data, dict):
            raise CatalogError(
                url,
                f"malformed JSON in the response: expected an object, got {type(data).__name__}",
                resp.status_code,
            )
        return data

    def api_error(self, url: str, e: Any) -> CatalogError:
        """The error of a failed pystac-client call (its ``APIError`` carries the status, if any)."""
        status = getattr(e, "status_code", None)
        if status is None:
            # unreachable: name the API, not the first collection a lookup happened to try
            return CatalogUnavailableError(self.url, f"cannot reach the STAC API: {self.scrub(str(e))[:300]}")
        if status >= 500:
            return CatalogUnavailableError(url, f"server error after {self.retries} retries", status)
        if status in (401, 403):
            return CatalogError(url, "not authorized" if status == 401 else "forbidden", status)
        return CatalogError(url, f"request refused: {self.scrub(str(e))[:300]}", status)

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s:
                text = text.replace(s, "***")
        return text
