"""Close matches of a mistyped name (product names, item ids), for "did you mean" hints."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches"]


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` candidates close to ``word``, best first, case-insensitive.

    Order: same name in another case; same name after a ``family:`` prefix (``ndvi`` -> ``index:NDVI``);
    difflib's close matches; candidates containing ``word`` (or contained in it, 3+ characters).
    """
    cands = list(dict.fromkeys(candidates))
    low: dict[str, str] = {}
    for c in cands:
        low.setdefault(c.lower(), c)
    w = word.lower()
    w_tail = w.rsplit(":", 1)[-1]
    out: list[str] = []

    def add(c: str) -> None:
        if c not in out:
            out.append(c)

    if w in low:
        add(low[w])
    for c in cands:
        if c.lower().rsplit(":", 1)[-1] == w_tail:
            add(c)
    for c in difflib.get_close_matches(w, list(low), n=n, cutoff=0.6):
        add(low[c])
    if len(w_tail) >= 3:
        for c in cands:
            cl = c.lower()
            if w_tail in cl or cl.rsplit(":", 1)[-1] in w:
                add(c)
    return out[:n]
