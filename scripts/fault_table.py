"""Run the fault matrix (tests/faults) and write its results table into docs/RELIABILITY.md.

    HSI_STACK_DIR=/work/stack .venv/bin/python scripts/fault_table.py [--from-junit FILE ...] [pytest args]

Runs ``pytest tests/faults`` with a JUnit report (or reads an existing one with ``--from-junit``, e.g.
the whole suite's from ``bash scripts/test.sh --junitxml=FILE``: only tests/faults cases are used) and
replaces the text between the ``<!-- fault-table -->`` markers of docs/RELIABILITY.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- fault-table -->", "<!-- /fault-table -->"


def _cases(junit: Path) -> list[tuple[str, str, float]]:
    rows = []
    for tc in ET.parse(junit).getroot().iter("testcase"):
        if not tc.get("classname", "").startswith("tests.faults."):  # a whole-suite report: only ours
            continue
        outcome = "pass"
        for tag in ("failure", "error", "skipped"):
            if tc.find(tag) is not None:
                outcome = {"failure": "FAIL", "error": "ERROR", "skipped": "skipped"}[tag]
        rows.append((tc.get("name", ""), outcome, float(tc.get("time", 0))))
    return rows


def table(junits: list[Path]) -> str:
    matrix: dict[str, dict[str, str]] = {}
    other: list[str] = []
    for name, outcome, secs in [c for j in junits for c in _cases(j)]:
        m = re.match(r"test_kill_at_fault_point_then_rerun\[(static|pgstac-s3)-(.+)\]", name)
        if m:
            matrix.setdefault(m.group(2), {})[m.group(1)] = f"{outcome} ({secs:.0f} s)"
        else:
            other.append(f"| `{name}` | {outcome} ({secs:.0f} s) |")
    lines = [
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `scripts/fault_table.py` (wall times on the machine it ran on).",
        "",
        "| killed at | static catalog + local storage | pgstac + S3 |",
        "|---|---|---|",
    ]
    for point, cells in matrix.items():
        lines.append(f"| `{point}` | {cells.get('static', '-')} | {cells.get('pgstac-s3', '-')} |")
    if other:
        lines += ["", "| other fault tests | result |", "|---|---|", *other]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--from-junit"]:
        junits, rc = [Path(a) for a in argv[1:]], 0
    else:
        junit = Path(tempfile.mkdtemp()) / "faults.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "tests/faults",
            "-p",
            "no:warnings",
            f"--junitxml={junit}",
            *argv,
        ]
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        junits = [junit]
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + table(junits) + "\n" + doc[end:])
    print(f"wrote the table into {DOC}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
