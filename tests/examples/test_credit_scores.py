"""``examples/credit_scores.py`` end to end, on every backend, with a small data set.

The report must hold every company exactly once, best score first, each score equal
to a direct recomputation from the data set; the e-mail must carry the report.
"""

from __future__ import annotations

import csv
import email
import email.policy
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

import conveyor
from conveyor import NonRetriableError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit_scores.py"
N = 200


@pytest.fixture
def example(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example imported afresh, bound to this test's database, working in ``tmp_path``."""
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", db_url)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("credit_scores", None)
    app = conveyor.load_app(f"{EXAMPLE}:app")
    module = sys.modules["credit_scores"]
    yield module
    app.close()
    sys.modules.pop("credit_scores", None)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_report_scores_every_company_once(
    example: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main(["--companies", str(N), "--concurrency", "4"]) == 0
    out = capsys.readouterr().out
    assert "self-check: 200 rows, every company once" in out

    companies = read_csv(tmp_path / "out" / "credit" / "companies.csv")
    assert [c["id"] for c in companies] == [f"C{i:07d}" for i in range(1, N + 1)]
    [report_path] = (tmp_path / "out" / "credit").glob("report-*.csv")
    report = read_csv(report_path)
    assert len(report) == N
    assert sorted(r["id"] for r in report) == [c["id"] for c in companies]
    expected = {c["id"]: example.score_row(c) for c in companies}
    for rank, row in enumerate(report, 1):
        want = expected[row["id"]]
        assert (int(row["rank"]), int(row["score"]), row["grade"], float(row["pd"])) == (
            rank, want["score"], want["grade"], want["pd"]
        )
    scores = [int(r["score"]) for r in report]
    assert scores == sorted(scores, reverse=True)

    [eml] = (tmp_path / "out" / "outbox").glob("credit-report-*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert f"{N} companies" in message["Subject"]
    [attachment] = list(message.iter_attachments())  # type: ignore[attr-defined]
    assert attachment.get_filename() == report_path.name
    assert attachment.get_content() == report_path.read_text()


def test_the_run_output_summarizes_the_report(example: ModuleType) -> None:
    assert example.main(["--companies", "50"]) == 0
    app = conveyor.Conveyor("check", database=example.app.database_url)
    try:
        [run] = app.list_runs(function="score-all")
        children = app.list_runs(function="score-company", limit=1000)
    finally:
        app.close()
    assert run.status == "completed"
    assert run.progress is not None and (run.progress.total, run.progress.completed) == (50, 50)
    assert len(children) == 50 and all(c.parent_id == run.id and c.pool == "background" for c in children)
    out = run.output
    assert out["count"] == 50 and sum(out["grades"].values()) == 50
    scores = [int(r["score"]) for r in read_csv(Path(out["report"]))]
    assert out["mean"] == round(sum(scores) / 50, 1) and (out["best"], out["worst"]) == (max(scores), min(scores))
    assert [s.id for s in run.steps] == ["list-companies", "score", "report"]


# --- the pieces, without workers -------------------------------------------------------------


def test_the_data_set_is_deterministic(example: ModuleType, tmp_path: Path) -> None:
    small, large = list(example.generate_companies(50)), list(example.generate_companies(80))
    assert small == large[:50]
    path = tmp_path / "companies.csv"
    assert example.ensure_companies(30, path) == 30
    first = path.read_bytes()
    assert example.ensure_companies(None, path) == 30  # any size will do (a cron run)
    assert example.ensure_companies(30, path) == 30 and path.read_bytes() == first
    assert example.ensure_companies(40, path) == 40
    assert path.read_bytes().startswith(first)


def test_a_child_reads_its_company_by_reference(example: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "companies.csv"
    example.ensure_companies(25, path)
    refs = list(example.company_refs(25, path))
    assert [r["id"] for r in refs] == [f"C{i:07d}" for i in range(1, 26)]
    rows = read_csv(path)
    assert [example.read_company(r, path) for r in refs] == rows
    assert len(list(example.company_refs(10, path))) == 10
    with pytest.raises(NonRetriableError, match="C0000002"):
        example.read_company({"id": "C0000002", "offset": refs[0]["offset"]}, path)


def test_the_self_check_finds_a_wrong_report(example: ModuleType, tmp_path: Path) -> None:
    companies = tmp_path / "out" / "credit" / "companies.csv"
    example.ensure_companies(20, companies)
    scores = [example.score_row(row) for row in read_csv(companies)]
    result = example.write_report(scores, "2026-01")
    report = Path(result["report"])
    assert example.verify_report(report, 20, companies) == []

    lines = report.read_text().splitlines()
    rank, id_, score, grade, pd = lines[5].split(",")
    tampered = [*lines[:5], ",".join((rank, id_, str(int(score) + 1), grade, pd)), *lines[6:]]
    report.write_text("\n".join(tampered) + "\n")
    assert any(id_ in p and "recomputed" in p for p in example.verify_report(report, 20, companies))

    report.write_text("\n".join(lines[:-1]) + "\n")  # the last company dropped
    assert example.verify_report(report, 20, companies) == ["1 of 20 companies are missing from the report"]


def test_the_report_month(example: ModuleType) -> None:
    cron = conveyor.Event("conveyor/cron", {"function_id": "score-all", "scheduled_at": "2026-03-01T03:00:00+00:00"})
    assert example.report_month(cron) == "2026-03"
    asked = conveyor.Event("scores.requested", {"month": "2025-12"})
    assert example.report_month(asked) == "2025-12"
    sent = conveyor.Event("scores.requested", {}, ts=datetime(2026, 7, 9, tzinfo=UTC))
    assert example.report_month(sent) == "2026-07"


def test_the_monthly_schedule_fires_in_paris_time(example: ModuleType, tmp_path: Path) -> None:
    """03:00 on the 1st in Paris is 02:00 UTC in winter: the tick fires score-all once, over the existing data set."""
    from conveyor.scheduler.ticker import CronTicker

    example.ensure_companies(30)
    app = example.app
    now = [datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()]
    ticker = CronTicker(app._engine(), clock=lambda: now[0])
    assert ticker.tick() == []
    now[0] = datetime(2026, 12, 1, 1, 59, tzinfo=UTC).timestamp()
    assert ticker.tick() == []
    now[0] = datetime(2026, 12, 1, 2, 0, 5, tzinfo=UTC).timestamp()
    slot = datetime(2026, 12, 1, 2, 0, tzinfo=UTC).timestamp()
    assert ticker.tick() == [("score-all", slot)]
    assert ticker.tick() == []  # once per slot
    app.drain(timeout=60)
    [run] = app.list_runs(function="score-all")
    assert run.status == "completed", run.error
    assert run.output["month"] == "2026-12" and run.output["count"] == 30
    assert example.verify_report(Path(run.output["report"]), 30) == []


def test_the_report_month_is_in_the_schedules_time_zone(example: ModuleType) -> None:
    late = conveyor.Event("scores.requested", {}, ts=datetime(2026, 1, 31, 23, 30, tzinfo=UTC))
    assert example.report_month(late) == "2026-02"  # 00:30 on Feb 1 in Paris


@pytest.mark.parametrize("companies", ["many", 0, -5, True, 2.5])
def test_a_bad_companies_count_fails_the_run_at_once(example: ModuleType, companies: object) -> None:
    app = example.app
    event_id = app.send("scores.requested", {"companies": companies})
    app.drain(timeout=30)
    [run] = app.runs_for_event(event_id)
    run = app.get_run(run.id)
    assert run.status == "failed"
    [step] = run.steps
    assert (step.id, step.attempts, step.error["type"]) == ("list-companies", 1, "NonRetriableError")
    assert "positive integer" in step.error["message"]
