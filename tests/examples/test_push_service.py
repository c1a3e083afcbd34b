"""``examples/push_service.py --demo`` end to end: a real ``conveyor server``, the service started
twice (live and background) as processes that register themselves, one fan-out whose children
all run on the background instance, and a report written by the reduce."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "push_service.py"


@pytest.mark.slow
def test_the_demo_fans_out_to_the_background_instance_and_writes_the_report(db_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo", "--companies", "60", "--database", db_url],
        cwd=tmp_path, capture_output=True, text=True, timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exit codes" not in done.stderr  # the server and both instances stopped cleanly
    match = re.search(r"^report: (\S+)$", done.stdout, re.M)
    assert match, done.stdout
    report = Path(match.group(1))
    assert report.is_relative_to(tmp_path)
    with report.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["company"] for r in rows) == [f"company-{i:05d}" for i in range(60)]
    assert {r["served_by"] for r in rows} == {"background"}
    scores = [int(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(300 <= s <= 850 for s in scores)
    assert "children served by {'background': 60}" in done.stdout


def test_the_live_route_and_the_microprocess_share_the_scoring_code() -> None:
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import push_service
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    first, again = push_service.score("acme"), push_service.score("acme")
    assert first == again and 300 <= first["score"] <= 850 and first["grade"] in "ABCDE"
    assert push_service.list_companies(3) == ["company-00000", "company-00001", "company-00002"]
