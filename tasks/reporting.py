"""Prefect UI artifacts for pipeline runs: outcome tables, markdown summaries, progress.

Plain functions (not tasks): call them inside a flow run and the artifacts attach to that run.
Outside a run (a notebook calling :mod:`hsi` directly) they still create keyed artifacts when a
Prefect API is reachable. Keys are stable per purpose (``on-demand-outcomes`` ...), so the
Artifacts page shows the history of every keyed artifact across runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from hsi.planning import Outcome, overall_status, summarize
from hsi.stac.report import data_uri, item_card, preview_asset
from hsi_pipeline.tasks.runtime import report_progress

__all__ = [
    "Progress",
    "outcome_markdown",
    "outcome_rows",
    "publish_item_artifacts",
    "publish_outcomes",
    "publish_table",
    "tag_run",
]

log = logging.getLogger(__name__)

_ICON = {"published": "✅", "skipped": "⏭️", "failed": "❌"}


def _link(href: str, text: str | None = None) -> str:
    if not href:
        return ""
    label = text or href.rsplit("/", 1)[-1]
    if href.startswith(("http://", "https://")):
        return f"[{label}]({href})"
    return f"`{href}`"


def outcome_rows(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """Rows of the outcome table artifact (also what ``hsi run`` prints)."""
    return [
        {
            "scene": o.scene,
            "activation": o.activation,
            "product": o.product,
            "status": o.status,
            "reason": o.reason,
            "item": f"{o.collection}/{o.item_id}" if o.item_id else "",
            "item_href": o.item_href,
            "asset": o.asset,
            "clip": o.clip_href,
        }
        for o in outcomes
    ]


def outcome_markdown(
    outcomes: Sequence[Outcome],
    *,
    title: str,
    context: Mapping[str, Any] | None = None,
    scene_quicklooks: Mapping[str, str] | None = None,
) -> str:
    """A markdown summary: counts, context (AOI, time, engine), failures first, then quicklooks."""
    counts, overall = summarize(outcomes), overall_status(outcomes)
    lines = [
        f"# {title}",
        "",
        f"**{overall.upper()}**: {counts['published']} published, {counts['skipped']} skipped, "
        f"{counts['failed']} failed (of {counts['total']})",
        "",
    ]
    for k, v in (context or {}).items():
        lines.append(f"- **{k}**: {v}")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- ❌ `{o.scene}` / `{o.product}`: {o.reason}" for o in failed]
    lines += [
        "",
        "## Scenes and products",
        "",
        "| | scene | product | item | reason |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        reason = o.reason.replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(
            f"| {_ICON.get(o.status, '')} {o.status} | `{o.scene}` | `{o.product}` | "
            f"{_link(o.item_href, o.item_id)} | {reason} |"
        )
    thumbs = [(o, o.thumbnail) for o in outcomes if o.thumbnail]
    if thumbs or scene_quicklooks:
        lines += ["", "## Quicklooks", ""]
        for scene, href in (scene_quicklooks or {}).items():
            lines.append(_image(f"{scene} (true colour)", href))
        for o, href in thumbs:
            lines.append(_image(f"{o.product} on {o.scene}", href))
    return "\n".join(lines) + "\n"


def _image(alt: str, href: str) -> str:
    if href.startswith(("http://", "https://")):
        return f"**{alt}**\n\n![{alt}]({href})\n"
    return f"- **{alt}**: `{href}` (set storage.public_base_url to see images here)"


def publish_table(rows: list[dict[str, Any]], key: str, description: str) -> UUID | None:
    """A table artifact; never fails the run (an unreachable API only logs a warning)."""
    try:
        return cast(UUID, create_table_artifact(table=rows, key=key, description=description))
    except Exception as e:  # reporting must not turn a good run into a failed one
        log.warning("could not publish table artifact %s: %s", key, e)
        return None


def publish_outcomes(
    outcomes: Sequence[Outcome],
    *,
    key: str = "on-demand",
    title: str = "On-demand run",
    context: Mapping[str, Any] | None = None,
    scene_quicklooks: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Table artifact ``<key>-outcomes`` and markdown artifact ``<key>-summary``; returns their ids."""
    counts = summarize(outcomes)
    desc = f"{title}: {counts['published']} published, {counts['skipped']} skipped, {counts['failed']} failed"
    table = publish_table(
        outcome_rows(outcomes) or [{"scene": "", "status": "no scenes matched"}], f"{key}-outcomes", desc
    )
    md_id: UUID | None = None
    try:
        md_id = cast(
            UUID,
            create_markdown_artifact(
                markdown=outcome_markdown(
                    outcomes, title=title, context=context, scene_quicklooks=scene_quicklooks
                ),
                key=f"{key}-summary",
                description=desc,
            ),
        )
    except Exception as e:
        log.warning("could not publish markdown artifact %s-summary: %s", key, e)
    return {"table": str(table) if table else None, "markdown": str(md_id) if md_id else None}


class Progress:
    """A progress artifact (0-100 %) advanced as units of work complete."""

    def __init__(self, total: int, *, key: str, description: str) -> None:
        self.total, self.done = max(total, 0), 0
        self.id: UUID | None = None
        report_progress("scenes", 0, self.total)
        try:
            self.id = cast(
                UUID,
                create_progress_artifact(progress=0.0 if total else 100.0, key=key, description=description),
            )
        except Exception as e:
            log.warning("could not create progress artifact %s: %s", key, e)

    @classmethod
    def attach(cls, artifact_id: str | None, total: int) -> Progress:
        """Continue a progress artifact created elsewhere (e.g. by the parent flow run)."""
        p = cls.__new__(cls)
        p.total, p.done, p.id = max(total, 0), 0, UUID(artifact_id) if artifact_id else None
        return p

    def advance(self, n: int = 1) -> float:
        self.done = min(self.done + n, self.total)
        report_progress("scenes", self.done, self.total)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        if self.id is not None:
            try:
                update_progress_artifact(artifact_id=self.id, progress=pct)
            except Exception as e:
                log.warning("could not update progress artifact %s: %s", self.id, e)
        return pct


def _artifact_key(text: str) -> str:
    """Artifact keys: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100]


def tag_run(scene_id: str, source: str) -> list[str]:
    """Add ``scene:<id>`` and ``source:<name>`` to the current flow run's tags (filterable in the UI)."""
    from prefect import get_client
    from prefect.runtime import flow_run

    fr_id = flow_run.get_id()
    if not fr_id:
        return []
    new = [f"scene:{scene_id}", f"source:{source}"]
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(UUID(fr_id)).tags or []
            tags = [*current, *[t for t in new if t not in current]]
            if tags != current:
                client.update_flow_run(UUID(fr_id), tags=tags)
            return tags
    except Exception as e:  # reporting must not fail the run
        log.warning("could not tag flow run %s: %s", fr_id, e)
        return []


def publish_item_artifacts(item: dict[str, Any], config: Any = None) -> dict[str, str | None]:
    """A link artifact to the STAC item and a markdown card (preview image, bands, statistics)."""
    from hsi_pipeline.tasks.runtime import services

    svc = services(config)
    cid, iid = str(item.get("collection") or ""), str(item["id"])
    href = svc.catalog.item_href(cid, iid)
    link = href if "://" in href else f"file://{href}"
    image = None
    pa = preview_asset(item)
    if pa is not None:
        ph = str(pa[1].get("href", ""))
        if ph.startswith(("http://", "https://")):
            image = ph
        else:
            try:
                image = data_uri(svc.store_for(ph).get_bytes(ph))
            except Exception as e:
                log.warning("could not read preview %s: %s", ph, e)
    key = _artifact_key(f"{cid}-{iid}")
    out: dict[str, str | None] = {"link": None, "markdown": None}
    try:
        out["link"] = str(
            create_link_artifact(
                link=link, link_text=f"{cid}/{iid}", key=f"{key}-item", description="STAC item"
            )
        )
        md = item_card(item, item_link=link, image=image)
        out["markdown"] = str(
            create_markdown_artifact(markdown=md, key=f"{key}-card", description=f"{cid}/{iid}")
        )
    except Exception as e:  # reporting must not turn a good run into a failed one
        log.warning("could not publish artifacts for %s/%s: %s", cid, iid, e)
    return out
