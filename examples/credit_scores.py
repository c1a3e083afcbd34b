"""Seed B's microprocesses: monthly credit scores, one tiny child run per company.

Run it:

    python examples/credit_scores.py                     # 10,000 companies
    python examples/credit_scores.py --companies 200     # a smaller data set

It generates a data set of companies (seeded, so the same every time) into
``out/credit/companies.csv`` if it is missing, sends ``scores.requested``, starts
two workers in this process (one for the ``default`` pool, one for ``background``),
shows the progress bar of ``conveyor runs watch`` until the run ends, then checks
the report against a direct recomputation. The database is
``$CONVEYOR_DATABASE_URL``, else ``sqlite:///credit.db``.

``score-all`` is the light splitter. It fires on the 1st of every month at 03:00,
Paris time (``cron="0 3 1 * *", timezone="Europe/Paris"``) in any running worker,
or at once on ``scores.requested``:

* ``list-companies`` makes sure the data set exists and returns how many companies
  it holds (a step output is JSON: a count, not a list of millions of ids);
* ``score`` maps ``score-company`` over a generator that streams ``{"id", "offset"}``
  references from the CSV file: one child run per company, on the ``background``
  pool, so the scoring never delays the ``default`` pool's work. Each child seeks to
  its company's row, computes a logistic probability of default from its figures,
  and returns ``{"id", "score", "grade", "pd"}``;
* ``report`` runs once, after every child ended: it writes
  ``out/credit/report-YYYY-MM.csv`` (best score first) and an e-mail with the report
  attached to ``out/outbox/credit-report-YYYY-MM.eml``, and returns the paths and
  summary statistics.

Serve it with long-running workers instead, and watch from another terminal:

    conveyor worker examples/credit_scores.py:app --pool default
    conveyor worker examples/credit_scores.py:app --pool background --concurrency 16
    conveyor send scores.requested --data '{"companies": 10000}'
    conveyor runs list --function score-all
    conveyor runs watch RUN_ID
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

import conveyor
from conveyor import Context, NonRetriableError, StepError
from conveyor.cli.watch import watch

OUT = Path("out")
CREDIT_DIR = OUT / "credit"
OUTBOX_DIR = OUT / "outbox"
COMPANIES = CREDIT_DIR / "companies.csv"
DEFAULT_COMPANIES = 10_000
TIMEZONE = "Europe/Paris"  # the schedule's, and the report month's
SEED = 2024
FIELDS = ("id", "name", "sector", "country", "revenue", "debt", "years", "employees", "late_payments")
ATTACH_LIMIT = 10 * 1024 * 1024  # a larger report is referenced by its path, not attached

app = conveyor.Conveyor("credit", database=os.environ.get("CONVEYOR_DATABASE_URL") or "sqlite:///credit.db")


# --- the data set: N companies, generated once, the same for a given N -----------------------

#: Sector -> additive term of the model's log-odds of default (riskier sectors are higher).
SECTOR_RISK = {
    "software": -0.5, "healthcare": -0.3, "finance": -0.1, "energy": 0.0, "manufacturing": 0.1,
    "logistics": 0.2, "retail": 0.3, "agriculture": 0.4, "construction": 0.6, "hospitality": 0.7,
}
COUNTRIES = ("DE", "FR", "ES", "IT", "NL", "PL", "SE", "PT", "BE", "AT")
SYLLABLES = ("ar", "bel", "cor", "dan", "el", "fin", "gra", "hol", "ist", "jun", "kor", "lum", "mar", "nor", "ost")
SUFFIXES = ("GmbH", "SA", "SL", "SpA", "BV", "Ltd", "AB", "Lda", "NV", "AG")


def generate_companies(n: int, seed: int = SEED) -> Iterator[dict[str, Any]]:
    """``n`` companies from one seeded generator: the first k rows are the same for every n >= k."""
    rnd = random.Random(seed)
    sectors = list(SECTOR_RISK)
    for number in range(1, n + 1):
        country = rnd.randrange(len(COUNTRIES))
        name = "".join(rnd.choice(SYLLABLES) for _ in range(rnd.randint(2, 3))).capitalize()
        revenue = round(math.exp(rnd.gauss(14.5, 1.6)), 2)  # log-normal, median ~2 M
        yield {
            "id": f"C{number:07d}",
            "name": f"{name} {SUFFIXES[country]}",
            "sector": sectors[rnd.randrange(len(sectors))],
            "country": COUNTRIES[country],
            "revenue": revenue,
            "debt": round(revenue * rnd.betavariate(2, 5) * 1.5, 2),
            "years": min(int(rnd.expovariate(1 / 12)), 99),
            "employees": max(1, int(revenue / rnd.uniform(80_000, 250_000))),
            "late_payments": min(int(rnd.expovariate(1 / 1.5)), 24),
        }


def count_companies(path: Path = COMPANIES) -> int | None:
    """The number of companies in the data set, or ``None`` if it is missing or not ours."""
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            if tuple(next(reader, ())) != FIELDS:
                return None
            return sum(1 for _ in reader)
    except OSError:
        return None


def ensure_companies(n: int | None, path: Path = COMPANIES) -> int:
    """Make sure the data set holds ``n`` companies (any number if ``n`` is None); return how many."""
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise NonRetriableError(f"companies must be a positive integer, got {n!r}")
    existing = count_companies(path)
    if existing is not None and (n is None or existing == n):
        return existing
    n = DEFAULT_COMPANIES if n is None else n
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(generate_companies(n))
    tmp.replace(path)  # atomic: a reader never sees half a file
    return n


def company_refs(count: int, path: Path = COMPANIES) -> Iterator[dict[str, Any]]:
    """Stream ``{"id", "offset"}`` for the first ``count`` companies: a child seeks to its row."""
    with path.open("rb") as f:
        offset = len(f.readline())  # the header
        for line, _ in zip(f, range(count), strict=False):
            yield {"id": line.split(b",", 1)[0].decode(), "offset": offset}
            offset += len(line)


def read_company(ref: dict[str, Any], path: Path = COMPANIES) -> dict[str, Any]:
    """The row that ``ref`` points at; refuses a row with another id (the file was regenerated)."""
    with path.open("rb") as f:
        f.seek(int(ref["offset"]))
        line = f.readline().decode()
    row = dict(zip(FIELDS, next(csv.reader([line])), strict=False))
    if row.get("id") != ref["id"]:
        raise NonRetriableError(f"company {ref['id']} is not at offset {ref['offset']} of {path}")
    return row


# --- the model: a logistic probability of default, mapped to a 300-850 score --------------------


def score_row(row: dict[str, Any]) -> dict[str, Any]:
    """``{"id", "score", "grade", "pd"}`` of one company (``row`` as read from the CSV)."""
    revenue, debt = float(row["revenue"]), float(row["debt"])
    leverage = min(debt / revenue, 5.0) if revenue > 0 else 5.0
    log_odds = (
        -2.0
        + 2.2 * leverage
        + 0.45 * int(row["late_payments"])
        - 0.55 * math.log1p(int(row["years"]))
        - 0.3 * (math.log10(max(revenue, 1.0)) - 6)
        + SECTOR_RISK.get(row["sector"], 0.5)
    )
    pd = 1 / (1 + math.exp(-log_odds))
    score = round(300 + 550 * (1 - pd))
    return {"id": row["id"], "score": score, "grade": grade(score), "pd": round(pd, 6)}


GRADES = (("A", 800), ("B", 740), ("C", 660), ("D", 560), ("E", 0))


def grade(score: int) -> str:
    return next(letter for letter, floor in GRADES if score >= floor)


# --- the reduce: a CSV report and an e-mail in the outbox --------------------------------------


def write_report(scores: Iterable[dict[str, Any]], month: str) -> dict[str, Any]:
    """Sort the scores (best first), write the report and the e-mail; return paths and statistics.

    ``scores`` is the map step's lazy sequence: it streams the children's outputs from
    storage a page at a time; only the compact sorted tuples are held in memory.
    """
    rows = sorted(((s["score"], s["id"], s["grade"], s["pd"]) for s in scores), key=lambda r: (-r[0], r[3], r[1]))
    CREDIT_DIR.mkdir(parents=True, exist_ok=True)
    report = CREDIT_DIR / f"report-{month}.csv"
    tmp = report.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("rank", "id", "score", "grade", "pd"))
        writer.writerows((rank, id_, score, grade_, pd) for rank, (score, id_, grade_, pd) in enumerate(rows, 1))
    tmp.replace(report)
    grades = Counter(r[2] for r in rows)
    stats: dict[str, Any] = {
        "month": month,
        "count": len(rows),
        "mean": round(sum(r[0] for r in rows) / len(rows), 1) if rows else None,
        "best": rows[0][0] if rows else None,
        "worst": rows[-1][0] if rows else None,
        "grades": {letter: grades.get(letter, 0) for letter, _ in GRADES},
    }
    email = write_email(report, stats)
    return {"report": str(report), "email": str(email), **stats}


def write_email(report: Path, stats: dict[str, Any]) -> Path:
    """An RFC 5322 message to the risk team, with the report attached, saved as ``.eml``."""
    msg = EmailMessage()
    msg["From"] = "Conveyor credit scores <scores@credit.example>"
    msg["To"] = "risk-team@credit.example"
    msg["Subject"] = f"Credit scores {stats['month']}: {stats['count']:,} companies, mean {stats['mean']}"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="credit.example")
    histogram = "\n".join(f"  {letter}: {n:>9,}" for letter, n in stats["grades"].items())
    size = report.stat().st_size
    where = "attached" if size <= ATTACH_LIMIT else f"at {report.resolve()} (too large to attach)"
    msg.set_content(
        f"Hello,\n\nthe credit scores of {stats['month']} are ready: {stats['count']:,} companies,\n"
        f"mean score {stats['mean']} (best {stats['best']}, worst {stats['worst']}).\n\n"
        f"Grades:\n{histogram}\n\nThe full report, best score first, is {where}.\n"
    )
    if size <= ATTACH_LIMIT:
        msg.add_attachment(report.read_text(), subtype="csv", filename=report.name)
    OUTBOX_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTBOX_DIR / f"credit-{report.stem}.eml"
    path.write_bytes(bytes(msg))
    return path


def report_month(event: conveyor.Event) -> str:
    """``YYYY-MM`` in the schedule's time zone: the cron slot's month, ``data.month`` if given, else the event's."""
    data = event.data if isinstance(event.data, dict) else {}
    if isinstance(data.get("month"), str):
        return str(data["month"])
    when = data.get("scheduled_at")
    ts = datetime.fromisoformat(when) if isinstance(when, str) else event.ts or datetime.now(UTC)
    return ts.astimezone(ZoneInfo(TIMEZONE)).strftime("%Y-%m")


# --- the functions ---------------------------------------------------------------------------------


@app.function(pool="background", retries=2)
def score_company(ctx: Context) -> dict[str, Any]:
    """One microprocess: the item is a ``{"id", "offset"}`` reference into the data set."""
    return score_row(read_company(ctx.event.data))


@app.function(id="score-all", on="scores.requested", cron="0 3 1 * *", timezone=TIMEZONE, retries=2)
def score_all(ctx: Context) -> dict[str, Any]:
    """The splitter: one child per company, then one reduce when the last child ended."""
    month = report_month(ctx.event)
    wanted = ctx.event.data.get("companies") if isinstance(ctx.event.data, dict) else None
    count = ctx.step.run("list-companies", ensure_companies, wanted)
    scores = ctx.step.map("score", score_company, company_refs(count))
    result: dict[str, Any] = ctx.step.run("report", write_report, scores, month)
    return result


@score_all.on_failure
def scoring_failed(ctx: Context, error: StepError | Exception) -> None:
    """Runs once when a month's scoring failed for good: the risk team hears of it."""
    OUTBOX_DIR.mkdir(parents=True, exist_ok=True)
    (OUTBOX_DIR / f"credit-failed-{ctx.run_id}.txt").write_text(
        f"Credit scoring run {ctx.run_id} failed: {error}\nSee: conveyor runs show {ctx.run_id}\n"
    )


# --- the self-check: the report against a direct recomputation -----------------------------------


def verify_report(report: Path, count: int, companies: Path = COMPANIES) -> list[str]:
    """Problems found in ``report`` (empty when it is right): one row per company, scores recomputed."""
    expected = {}
    with companies.open(newline="") as f:
        for row, _ in zip(csv.DictReader(f), range(count), strict=False):
            expected[row["id"]] = score_row(row)
    problems: list[str] = []
    seen: set[str] = set()
    previous: tuple[int, float, str] | None = None
    with report.open(newline="") as f:
        for rank, row in enumerate(csv.DictReader(f), 1):
            id_ = row["id"]
            want = expected.get(id_)
            score, pd = int(row["score"]), float(row["pd"])
            got = {"id": id_, "score": score, "grade": row["grade"], "pd": pd}
            if id_ in seen:
                problems.append(f"{id_} appears twice")
            elif want is None:
                problems.append(f"{id_} is not in the data set")
            elif got != want:
                problems.append(f"{id_}: report says {got}, recomputed {want}")
            key = (-score, pd, id_)
            if int(row["rank"]) != rank or (previous is not None and previous > key):
                problems.append(f"row {rank} ({id_}) is out of order")
            seen.add(id_)
            previous = key
    missing = len(expected.keys() - seen)
    if missing:
        problems.append(f"{missing} of {len(expected)} companies are missing from the report")
    return problems


# --- the script -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Score N companies, one child run each, and watch the progress.")
    parser.add_argument("--companies", metavar="N", type=_positive, default=DEFAULT_COMPANIES,
                        help=f"size of the generated data set (default {DEFAULT_COMPANIES:,})")
    parser.add_argument("--concurrency", metavar="C", type=_positive, default=32,
                        help="slots of the background pool's worker (default 32)")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return demo(args)
    except conveyor.ConveyorError as exc:  # e.g. a database that cannot be opened
        print(f"error: {exc}", file=sys.stderr)
        return 1


def demo(args: argparse.Namespace) -> int:
    """Send the event, serve both pools in this process, watch the run, check the report."""
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    ensure_companies(args.companies)
    console.print(f"data set: {COMPANIES} ({args.companies:,} companies); database: {app.database_url}")

    event_id = app.send("scores.requested", {"companies": args.companies})
    run_id = next(r.id for r in app.runs_for_event(event_id) if r.function_id == "score-all")
    console.print(f"sent scores.requested; run {run_id} (follow it elsewhere with: conveyor runs watch {run_id})")
    workers = [
        app.worker(pools=["default"], concurrency=2).start(),  # the splitter and the reduce
        app.worker(pools=["background"], concurrency=args.concurrency).start(),  # the children
    ]
    try:
        run = watch(app.get_run, run_id, console, interval=0.25)
    except KeyboardInterrupt:
        console.print(f"interrupted: run {run_id} carries on when a worker serves it")
        return 130
    finally:
        for worker in workers:
            worker.stop(grace=10)
        app.close()
    if run.status != "completed":
        console.print(f"[red]run {run.id} {run.status}[/]: {run.error}")
        return 1
    return 0 if summarize(console, run, args.companies) else 1


def summarize(console: Console, run: conveyor.Run, count: int) -> bool:
    """Print the run's result and check the report; whether it is right."""
    out = run.output
    took = (run.ended_at - run.started_at).total_seconds() if run.ended_at and run.started_at else 0.0
    console.print(f"\n[bold]score-all[/] [green]completed[/] in {took:.2f}s: {out['count']:,} companies, "
                  f"mean score {out['mean']} (best {out['best']}, worst {out['worst']})")
    table = Table("grade", "companies", "share", title=f"grades {out['month']}", title_justify="left")
    for letter, n in out["grades"].items():
        table.add_row(letter, f"{n:,}", f"{100 * n / max(out['count'], 1):.1f}%")
    console.print(table)
    console.print(f"report: {out['report']}\ne-mail: {out['email']}")
    problems = verify_report(Path(out["report"]), count)
    if problems:
        console.print(f"[red]self-check failed ({len(problems)} problems):[/]")
        for problem in problems[:10]:
            console.print(f"  {problem}")
        return False
    console.print(f"self-check: {count:,} rows, every company once, best first, "
                  "each score equal to a direct recomputation")
    return True


if __name__ == "__main__":
    sys.exit(main())
