"""Connected components of a mask computed window by window, in bounded memory (methane plumes).

Each window is labelled on its own (scipy.ndimage, 8-connectivity); labels that touch across a window
border (the window above, including diagonals, and the window to the left) are joined with a
union-find at the end. Per component it keeps the area, the maximum and sum of a value, and the row
and column extent, so a scene larger than memory yields the same plumes as labelling it whole
(``tests/unit/test_products_methane.py`` checks this against ``ndimage.label`` of the whole mask).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["WindowedComponents"]


class WindowedComponents:
    """Plume candidates labelled per window, joined across window borders (8-connectivity)."""

    def __init__(self, width: int) -> None:
        self.parent = np.zeros(1, dtype=np.int64)  # id 0 = background
        self.area = np.zeros(1, dtype=np.int64)
        self.vmax = np.full(1, -np.inf)
        self.vsum = np.zeros(1)
        self.rows = np.zeros((1, 2), dtype=np.int64)  # min/max row
        self.cols = np.zeros((1, 2), dtype=np.int64)
        self.offsets: dict[tuple[int, int], int] = {}
        self.prev_bottom = np.zeros(width, dtype=np.int64)  # last row of the previous window row
        self.cur_bottom = np.zeros(width, dtype=np.int64)
        self.left_col: np.ndarray | None = None  # right column of the previous window (same row)
        self.row_off = -1
        self.pairs: list[np.ndarray] = []

    @staticmethod
    def label(cand: np.ndarray) -> tuple[np.ndarray, int]:
        from scipy import ndimage

        lab, n = ndimage.label(cand, structure=np.ones((3, 3), dtype=bool))
        return lab.astype(np.int64), int(n)

    def add(self, cand: np.ndarray, alpha: np.ndarray, row_off: int, col_off: int) -> None:
        h, w = cand.shape
        if row_off != self.row_off:  # new window row
            self.prev_bottom, self.cur_bottom = self.cur_bottom, np.zeros_like(self.cur_bottom)
            self.left_col = None
            self.row_off = row_off
        lab, n = self.label(cand)
        base = self.parent.size
        self.offsets[(row_off, col_off)] = base - 1
        gid = np.where(lab > 0, lab + base - 1, 0)
        if n:
            ids = np.arange(base, base + n)
            flat = lab.ravel()
            keep = flat > 0
            lab_k = flat[keep] - 1
            vals = alpha.ravel()[keep]
            rr, cc = np.divmod(np.nonzero(keep)[0], w)
            self.parent = np.concatenate([self.parent, ids])
            self.area = np.concatenate([self.area, np.bincount(lab_k, minlength=n)])
            vmax = np.full(n, -np.inf)
            np.maximum.at(vmax, lab_k, vals)
            self.vmax = np.concatenate([self.vmax, vmax])
            self.vsum = np.concatenate([self.vsum, np.bincount(lab_k, weights=vals, minlength=n)])
            rmin = np.full(n, np.iinfo(np.int64).max)
            rmax = np.full(n, -1)
            cmin = rmin.copy()
            cmax = rmax.copy()
            np.minimum.at(rmin, lab_k, rr + row_off)
            np.maximum.at(rmax, lab_k, rr + row_off)
            np.minimum.at(cmin, lab_k, cc + col_off)
            np.maximum.at(cmax, lab_k, cc + col_off)
            self.rows = np.concatenate([self.rows, np.stack([rmin, rmax], axis=1)])
            self.cols = np.concatenate([self.cols, np.stack([cmin, cmax], axis=1)])
            # joins with the window above (incl. diagonals) and the window to the left
            if row_off > 0:
                top = gid[0]
                for d in (-1, 0, 1):
                    lo, hi = max(0, -d - col_off), min(w, self.prev_bottom.size - col_off - d)
                    if hi <= lo:
                        continue
                    above = self.prev_bottom[col_off + lo + d : col_off + hi + d]
                    a, b = top[lo:hi], above
                    m = (a > 0) & (b > 0)
                    if m.any():
                        self.pairs.append(np.stack([a[m], b[m]], axis=1))
            if self.left_col is not None:
                left = gid[:, 0]
                for d in (-1, 0, 1):
                    lo, hi = max(0, -d), min(h, self.left_col.size - d)
                    if hi <= lo:
                        continue
                    a, b = left[lo:hi], self.left_col[lo + d : hi + d]
                    m = (a > 0) & (b > 0)
                    if m.any():
                        self.pairs.append(np.stack([a[m], b[m]], axis=1))
        self.cur_bottom[col_off : col_off + w] = gid[-1]
        self.left_col = gid[:, -1].copy()

    def _find(self, i: int) -> int:
        p = self.parent
        root = i
        while p[root] != root:
            root = int(p[root])
        while p[i] != root:
            p[i], i = root, int(p[i])
        return root

    def resolve(self, min_pixels: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """(keep (ids,) bool: id belongs to a plume, plumes sorted by size, largest first)."""
        if self.pairs:
            for a, b in np.unique(np.concatenate(self.pairs), axis=0).tolist():
                ra, rb = self._find(a), self._find(b)
                if ra != rb:
                    self.parent[max(ra, rb)] = min(ra, rb)
        roots = self.parent.copy()
        while True:
            nxt = roots[roots]
            if np.array_equal(nxt, roots):
                break
            roots = nxt
        n = self.parent.size
        area = np.bincount(roots, weights=self.area, minlength=n)
        vsum = np.bincount(roots, weights=self.vsum, minlength=n)
        vmax = np.full(n, -np.inf)
        np.maximum.at(vmax, roots, self.vmax)
        rmin = np.full(n, np.iinfo(np.int64).max)
        rmax = np.full(n, -1)
        cmin, cmax = rmin.copy(), rmax.copy()
        np.minimum.at(rmin, roots, self.rows[:, 0])
        np.maximum.at(rmax, roots, self.rows[:, 1])
        np.minimum.at(cmin, roots, self.cols[:, 0])
        np.maximum.at(cmax, roots, self.cols[:, 1])
        is_plume = (area >= min_pixels) & (np.arange(n) > 0) & (roots == np.arange(n))
        keep = is_plume[roots]
        keep[0] = False
        plumes: list[dict[str, Any]] = [
            {
                "pixels": int(area[r]),
                "max_ppm_m": float(vmax[r]),
                "mean_ppm_m": float(vsum[r] / area[r]),
                "sum_ppm_m_pixels": float(vsum[r]),
                "rows": [int(rmin[r]), int(rmax[r])],
                "cols": [int(cmin[r]), int(cmax[r])],
            }
            for r in np.nonzero(is_plume)[0]
        ]
        plumes.sort(key=lambda d: (-d["pixels"], d["rows"][0], d["cols"][0]))
        return keep, plumes
