"""Helpers of the benchmark smoke tests: run ``python -m benchmarks ...`` from this checkout in a
subprocess, and read the tables it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT_S = 45


def run_benchmarks(
    args: list[str], tmp_path: Path, timeout_s: float = SMOKE_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``python -m *args --out tmp_path`` with this checkout first on the import path."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", *args, "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def table_rows(stdout: str, title_prefix: str) -> tuple[str, list[str]]:
    """The header and data rows of the table whose title starts with ``title_prefix``."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title_prefix))
    header, rule = lines[start + 1], lines[start + 2]
    assert set(rule) == {"-"}, f"no rule under the header of {title_prefix!r}: {rule!r}"
    rows = []
    for line in lines[start + 3 :]:
        if not line.strip():
            break
        rows.append(line)
    return header, rows


def cells(row: str) -> list[str]:
    """A table row's cells (columns are two spaces apart at least; cells hold single ones)."""
    return re.split(r"\s{2,}", row.strip())
