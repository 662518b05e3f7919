"""Pure logic of the S3/SNS/SQS -> Prefect event bridge (no prefect, no boto3).

* :func:`parse_message` turns one SQS message body into :class:`ObjectCreated` records. Accepted
  shapes: a raw S3 notification (``Records[].s3``), an SNS envelope around one
  (``{"Type": "Notification", "Message": "<json>"}``), an EventBridge ``Object Created`` event.
  ``s3:TestEvent`` and non-ObjectCreated records are ignored with a reason; malformed bodies raise
  :class:`~hsi.errors.PoisonMessage`. Keys are URL-decoded with ``unquote_plus``.
* :func:`classify_key` maps a key to a source by configured glob patterns (data, not code):
  ENVI data objects, their ``.hdr`` headers, archives; sidecars and unknown keys are ignored.
* :class:`RecentIds` is a small TTL record of event ids already posted (the bridge's own dedupe).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field

from hsi.errors import PoisonMessage

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RULES",
    "SIDECAR_SUFFIXES",
    "Classified",
    "ObjectCreated",
    "ParsedMessage",
    "PoisonMessage",
    "RecentIds",
    "SourceRule",
    "classify_key",
    "glob_to_regex",
    "parse_message",
    "rules_from_config",
]


# --------------------------------------------------------------------------- message parsing


@dataclass(frozen=True)
class ObjectCreated:
    """One ``ObjectCreated`` notification record (key already URL-decoded)."""

    bucket: str
    key: str
    event_name: str = "ObjectCreated:Put"
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    event_time: datetime | None = None
    shape: Literal["s3", "sns", "eventbridge"] = "s3"


@dataclass
class ParsedMessage:
    records: list[ObjectCreated] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _clean_version(v: Any) -> str | None:
    if not isinstance(v, str) or not v or v == "null":
        return None
    return v


def _clean_etag(v: Any) -> str | None:
    return v.strip('"') or None if isinstance(v, str) else None


def _s3_records(doc: dict[str, Any], shape: Literal["s3", "sns"]) -> ParsedMessage:
    out = ParsedMessage()
    records = doc.get("Records")
    if not isinstance(records, list):
        raise PoisonMessage("S3 notification: 'Records' is not a list")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise PoisonMessage(f"S3 notification: Records[{i}] is not an object")
        name = str(rec.get("eventName", ""))
        if not name.startswith("ObjectCreated"):
            out.ignored.append(f"Records[{i}]: event {name or '<none>'} is not ObjectCreated")
            continue
        bucket, obj, raw_key = _bucket_object(rec.get("s3"), f"S3 notification: Records[{i}].s3")
        size = obj.get("size")
        out.records.append(
            ObjectCreated(
                bucket=bucket,
                key=unquote_plus(raw_key),
                event_name=name,
                version_id=_clean_version(obj.get("versionId")),
                etag=_clean_etag(obj.get("eTag")),
                size=size if isinstance(size, int) else None,
                event_time=_parse_time(rec.get("eventTime")),
                shape=shape,
            )
        )
    return out


def _bucket_object(container: Any, where: str) -> tuple[str, dict[str, Any], str]:
    """(bucket name, object dict, key) of an S3 record or an EventBridge detail; PoisonMessage if malformed."""
    try:
        bucket = container["bucket"]["name"]
        obj = container["object"]
        key = obj["key"]
        if not isinstance(obj, dict):
            raise TypeError("object")
    except (KeyError, TypeError) as e:
        raise PoisonMessage(f"{where} lacks {e}") from None
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise PoisonMessage(f"{where}: empty or non-string bucket/key")
    return bucket, obj, key


def _eventbridge(doc: dict[str, Any]) -> ParsedMessage:
    out = ParsedMessage()
    dt = doc.get("detail-type")
    if dt != "Object Created":
        out.ignored.append(f"EventBridge event {dt!r} is not 'Object Created'")
        return out
    detail: Any = doc.get("detail")
    bucket, obj, key = _bucket_object(detail, "EventBridge Object Created: detail")
    size = obj.get("size")
    # EventBridge keys are URL-encoded like S3 notifications (spaces as '+').
    out.records.append(
        ObjectCreated(
            bucket=bucket,
            key=unquote_plus(key),
            event_name=f"ObjectCreated:{detail.get('reason', 'PutObject')}",
            version_id=_clean_version(obj.get("version-id")),
            etag=_clean_etag(obj.get("etag") or obj.get("eTag")),
            size=size if isinstance(size, int) else None,
            event_time=_parse_time(doc.get("time")),
            shape="eventbridge",
        )
    )
    return out


def _load(body: str | bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, TypeError) as e:
        raise PoisonMessage(f"{what} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise PoisonMessage(f"{what} is a JSON {type(doc).__name__}, expected an object")
    return doc


def _dispatch(doc: dict[str, Any], shape: Literal["s3", "sns"]) -> ParsedMessage:
    if doc.get("Event") == "s3:TestEvent":
        return ParsedMessage(ignored=[f"s3:TestEvent for bucket {doc.get('Bucket', '?')}"])
    if "Records" in doc:
        return _s3_records(doc, shape)
    if doc.get("source") == "aws.s3" and "detail-type" in doc:
        return _eventbridge(doc)
    raise PoisonMessage(f"unknown message shape (keys: {', '.join(sorted(doc)[:8]) or 'none'})")


def parse_message(body: str | bytes) -> ParsedMessage:
    """Parse one SQS message body; raises :class:`PoisonMessage` when it can never be processed."""
    doc = _load(body, "message body")
    if doc.get("Type") == "Notification" and "Message" in doc:
        inner = doc["Message"]
        if not isinstance(inner, str):
            raise PoisonMessage("SNS envelope: 'Message' is not a string")
        return _dispatch(_load(inner, "SNS Message"), "sns")
    if doc.get("Type") == "SubscriptionConfirmation":
        return ParsedMessage(ignored=["SNS SubscriptionConfirmation (not an object notification)"])
    return _dispatch(doc, "s3")


# --------------------------------------------------------------------------- key classification

#: Suffixes of files that travel with a scene but are never the scene itself.
SIDECAR_SUFFIXES: tuple[str, ...] = (
    ".hdr", "_glt", "_igm", "_loc", "_obs", "_obs_ort", "_h2o", ".gain", ".spc", ".txt", ".log",
    ".png", ".jpg", ".jpeg", ".kml", ".kmz", ".xml", ".json", ".md5", ".aux.xml", "_readme",
)  # fmt: skip

ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar.gz", ".tgz", ".tar", ".zip")


class SourceRule(BaseModel):
    """Which keys belong to a source: glob patterns (``**`` spans directories) + a scene id regex."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    patterns: tuple[str, ...]
    scene_id_regex: str = Field(
        default=r"^(?P<scene>[^_.]+)",
        description="regex on the file name; group 'scene' is the scene id (an optional group 'segment' is "
        "appended to it: a scene of a flight line)",
    )
    header_suffix: str = ".hdr"


DEFAULT_RULES: tuple[SourceRule, ...] = (
    SourceRule(
        source="aviris-ng",
        patterns=("**/ang*_rdn_*_img", "**/ang*_rfl_*_img", "**/ang*_corr_*_img", "**/ang*.tar.gz"),
        scene_id_regex=r"^(?P<scene>ang\d{8}t\d{6})",
    ),
    SourceRule(
        source="aviris-classic",
        patterns=("**/f??????t??p??r??*_img", "**/f??????t??p??r??*.tar.gz"),
        # a flight line delivered in scenes (_sc01_, _sc02_): each is its own item (hsi.sources.aviris_classic)
        scene_id_regex=r"^(?P<scene>f\d{6}t\d{2}p\d{2}r\d{2})(?:.*?_(?P<segment>sc\d{2})(?=[_.]|$))?",
    ),
    # EMIT granules are self-contained netCDF4 files (no header); the OBS / MASK companion granule is
    # picked up from the same prefix when the cube is indexed, so put it first.
    SourceRule(
        source="emit",
        patterns=("**/EMIT_L1B_RAD_*.nc", "**/EMIT_L2A_RFL_*.nc"),
        scene_id_regex=r"^(?P<scene>EMIT_L(?:1B|2A)_(?:RAD|RFL)_\d{3}_\d{8}T\d{6}_\d{7}_\d{3})",
    ),
)
COMPLETE_SUFFIXES: tuple[str, ...] = (".nc",)  # single-file scenes: complete as is, like archives


def rules_from_config(data: Any) -> tuple[SourceRule, ...]:
    """Rules from the typed configuration or a list of ``{source, patterns, [scene_id_regex]}``.

    ``data`` is a :class:`~hsi.config.PipelineConfig` (or anything with ``sources``): one rule per
    configured source from ``sources.<name>.patterns`` / ``scene_id_regex``, falling back to the
    built-in rule of that source for what is not set (a source with neither is not bridged). No
    configured sources, or ``None`` -> :data:`DEFAULT_RULES`.
    """
    if data is None:
        return DEFAULT_RULES
    sources = getattr(data, "sources", None)
    if sources is None:
        return tuple(SourceRule.model_validate(d) for d in data)
    if not sources:
        return DEFAULT_RULES
    builtin = {r.source: r for r in DEFAULT_RULES}
    rules = []
    for name, sc in sources.items():
        base = builtin.get(name)
        patterns = tuple(sc.patterns) if sc.patterns is not None else (base.patterns if base else ())
        if not patterns:
            log.warning(
                "source %s has no key patterns (sources.%s.patterns): the bridge ignores it", name, name
            )
            continue
        regex = sc.scene_id_regex or (base.scene_id_regex if base else None)
        rules.append(
            SourceRule(source=name, patterns=patterns, **({"scene_id_regex": regex} if regex else {}))
        )
    return tuple(rules)


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob: ``**/`` = zero or more directories, ``*``/``?`` never cross ``/``."""
    i, out = 0, []
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class Classified:
    """What a key is. ``kind``: ``data`` (ENVI data; needs ``header_key``), ``header`` (of
    ``data_key``), ``archive`` (complete as is) or ``ignored`` (with ``reason``)."""

    kind: Literal["data", "header", "archive", "ignored"]
    key: str
    source: str = ""
    scene_id: str = ""
    data_key: str = ""
    header_key: str = ""
    reason: str = ""


def _match(key: str, rules: Iterable[SourceRule]) -> tuple[SourceRule, str] | None:
    name = key.rsplit("/", 1)[-1]
    for rule in rules:
        if any(glob_to_regex(p).match(key) for p in rule.patterns):
            m = re.search(rule.scene_id_regex, name)
            scene = (m.groupdict().get("scene") or m.group(0)) if m else ""
            segment = m.groupdict().get("segment") if m else None
            return rule, f"{scene}-{segment.lower()}" if scene and segment else scene
    return None


def classify_key(key: str, rules: Iterable[SourceRule] = DEFAULT_RULES) -> Classified:
    """Decide what an object key is; never raises (unknown keys are ``ignored`` with the reason)."""
    rules = tuple(rules)
    name = key.rsplit("/", 1)[-1]
    if not name:
        return Classified("ignored", key, reason=f"{key!r} is a directory marker")
    found = _match(key, rules)
    if found:
        rule, scene = found
        if not scene:
            return Classified("ignored", key, source=rule.source,
                              reason=f"{key!r} matches source {rule.source} but no scene id ({rule.scene_id_regex})")  # fmt: skip
        if name.lower().endswith(ARCHIVE_SUFFIXES + COMPLETE_SUFFIXES):
            return Classified("archive", key, source=rule.source, scene_id=scene, data_key=key)
        return Classified("data", key, source=rule.source, scene_id=scene, data_key=key,
                          header_key=key + rule.header_suffix)  # fmt: skip
    for rule in rules:
        if key.endswith(rule.header_suffix):
            data_key = key[: -len(rule.header_suffix)]
            hit = _match(data_key, (rule,))
            if hit and hit[1] and not data_key.lower().endswith(ARCHIVE_SUFFIXES):
                return Classified("header", key, source=rule.source, scene_id=hit[1],
                                  data_key=data_key, header_key=key)  # fmt: skip
    lower = name.lower()
    for suffix in SIDECAR_SUFFIXES:
        if lower.endswith(suffix):
            return Classified("ignored", key, reason=f"{key!r} is a sidecar ({suffix}), not a scene")
    return Classified("ignored", key, reason=f"{key!r} matches no source pattern")


# --------------------------------------------------------------------------- dedupe record


class RecentIds:
    """Thread-safe TTL set of event ids the bridge already had accepted by the Prefect API."""

    def __init__(self, ttl_s: float = 3600.0, maxsize: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.ttl_s = ttl_s
        self.maxsize = maxsize
        self._clock = clock
        self._items: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._items:
            k, exp = next(iter(self._items.items()))
            if exp > now and len(self._items) <= self.maxsize:
                break
            self._items.popitem(last=False)

    def add(self, event_id: str) -> None:
        with self._lock:
            now = self._clock()
            self._items.pop(event_id, None)
            self._items[event_id] = now + self.ttl_s
            self._expire(now)

    def __contains__(self, event_id: object) -> bool:
        with self._lock:
            self._expire(self._clock())
            return event_id in self._items

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._items)
