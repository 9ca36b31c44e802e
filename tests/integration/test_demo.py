"""`make demo` (scripts/demo.py), the README's first command, run as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_backs_up_restores_elsewhere_and_finds_every_copy_identical() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = done.stdout.split("\nsummary:\n", 1)[1].splitlines()
    checks = [line.split(None, 1) for line in summary if line.startswith("  ")]
    assert [what for verdict, what in checks if verdict == "identical"] == [
        "PostgreSQL schema and data (pg_dump)",
        "PostgreSQL large objects",
        "Redis keys, values and TTLs (db 0,1 -> 8,9)",
        "uploads folder",
        "config folder",
    ]
    assert "demo passed" in done.stdout
