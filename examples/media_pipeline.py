"""Seed A's media pipeline: a background function made of four durable steps.

Run it:

    python examples/media_pipeline.py            # sends 3 events, runs them, prints the runs
    python examples/media_pipeline.py --fresh    # new event ids: runs everything again

or serve it with a long-running worker and send events from the CLI:

    conveyor worker examples/media_pipeline.py:app
    conveyor send transcription.requested --data '{"audio_id": "a1", "user_id": "u1"}'

`transcription.requested` starts `transcribe-audio`, whose steps are
`fetch-audio-metadata` (synthesize a WAV file if missing, read its header),
`transcribe` (per-second loudness in dBFS stands in for speech-to-text; it fails
transiently on its first attempt, so every run shows a retry), then
`parse-save-transcription` and `notify-user` (files under ./out/). Each step's
result is saved: the retry re-runs `transcribe` only, not the whole job.

Event ids are stable (`demo-<audio_id>`): the id is the idempotency key, so running
the script twice sends nothing new and shows the same runs. `--fresh` adds a
unique suffix to send new events.
"""

from __future__ import annotations

import array
import json
import math
import os
import sys
import uuid
import wave
import zlib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import conveyor
from conveyor import Context, StepError

OUT = Path("out")
MEDIA_DIR = OUT / "media"
OUTBOX_DIR = OUT / "outbox"
RATE = 16_000

app = conveyor.Conveyor("media", database=os.environ.get("CONVEYOR_DATABASE_URL") or "sqlite:///media.db")


# --- step bodies: plain functions with real local side effects --------------------


def fetch_audio_metadata(audio_id: str, seconds: int) -> dict[str, Any]:
    """Synthesize ``out/media/<audio_id>.wav`` if it is missing, then read its header."""
    path = MEDIA_DIR / f"{audio_id}.wav"
    if not path.exists():
        synthesize(path, seconds, seed=zlib.crc32(audio_id.encode()))
    with wave.open(str(path), "rb") as wav:
        frames, rate = wav.getnframes(), wav.getframerate()
        return {
            "path": str(path),
            "channels": wav.getnchannels(),
            "sample_width": wav.getsampwidth(),
            "rate": rate,
            "frames": frames,
            "duration": round(frames / rate, 3),
        }


def synthesize(path: Path, seconds: int, seed: int) -> None:
    """Mono 16-bit tones, one per second, with varying pitch and loudness (some silence)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = array.array("h")
    levels = (0.9, 0.35, 0.0, 0.6, 0.1, 0.25)  # fractions of full scale; 0.0 is silence
    for second in range(seconds):
        amplitude = levels[(seed + second) % len(levels)]
        frequency = 220.0 * (1 + ((seed >> second) & 0b11) / 2)
        step = 2 * math.pi * frequency / RATE
        samples.extend(int(32767 * amplitude * math.sin(step * i)) for i in range(RATE))
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.tobytes())
    tmp.replace(path)  # atomic: a crash never leaves half a file behind


def loudness(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The "transcript": RMS loudness of each second, in dBFS (0 is full scale)."""
    with wave.open(meta["path"], "rb") as wav:
        data = array.array("h", wav.readframes(wav.getnframes()))
    rate = meta["rate"] * meta["channels"]
    lines = []
    for second, start in enumerate(range(0, len(data), rate)):
        chunk = data[start : start + rate]
        rms = math.sqrt(sum(s * s for s in chunk) / len(chunk)) if chunk else 0.0
        dbfs = round(20 * math.log10(rms / 32768), 1) if rms > 0 else None
        label = "silence" if dbfs is None or dbfs < -50 else "loud" if dbfs > -12 else "quiet"
        lines.append({"second": second, "dbfs": dbfs, "label": label})
    return lines


def save_transcription(audio_id: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    MEDIA_DIR.mkdir(parents=True, exist_ok=True)
    json_path = MEDIA_DIR / f"{audio_id}.transcript.json"
    text_path = MEDIA_DIR / f"{audio_id}.transcript.txt"
    json_path.write_text(json.dumps({"audio_id": audio_id, "seconds": lines}, indent=2))
    text_path.write_text(
        "".join(
            f"{line['second']:>3}s  {line['label']:<8}{'-' if line['dbfs'] is None else line['dbfs']:>7} dBFS\n"
            for line in lines
        )
    )
    loud = sum(1 for line in lines if line["label"] == "loud")
    return {"json": str(json_path), "text": str(text_path), "seconds": len(lines), "loud": loud}


def notify_user(user_id: str, audio_id: str, saved: dict[str, Any]) -> str:
    OUTBOX_DIR.mkdir(parents=True, exist_ok=True)
    message = OUTBOX_DIR / f"{user_id}-{audio_id}.txt"
    message.write_text(
        f"To: {user_id}\nSubject: your transcription of {audio_id} is ready\n\n"
        f"{saved['seconds']} seconds, {saved['loud']} of them loud. Transcript: {saved['text']}\n"
    )
    return str(message)


# --- the background function --------------------------------------------------------


@app.function(
    id="transcribe-audio",
    on="transcription.requested",
    retries=3,
    backoff=conveyor.Backoff(base=0.2, cap=2),
)
async def transcribe_audio(ctx: Context) -> dict[str, Any]:
    audio_id: str = ctx.event.data["audio_id"]
    user_id: str = ctx.event.data.get("user_id", "anonymous")
    seconds = int(ctx.event.data.get("seconds", 4))

    meta = await ctx.step.run("fetch-audio-metadata", fetch_audio_metadata, audio_id, seconds)

    def transcribe() -> list[dict[str, Any]]:
        if ctx.attempt == 0:  # the first attempt of this step fails: watch it retry
            raise RuntimeError("transient: speech service timed out")
        return loudness(meta)

    lines = await ctx.step.run("transcribe", transcribe)
    saved = await ctx.step.run("parse-save-transcription", save_transcription, audio_id, lines)
    message = await ctx.step.run("notify-user", notify_user, user_id, audio_id, saved)
    return {"seconds": saved["seconds"], "transcript": saved["json"], "message": message}


@transcribe_audio.on_failure
async def transcription_failed(ctx: Context, error: StepError | Exception) -> None:
    """Runs once when a run failed for good: tell the user instead of failing silently."""
    OUTBOX_DIR.mkdir(parents=True, exist_ok=True)
    audio_id = ctx.event.data.get("audio_id", "unknown")
    (OUTBOX_DIR / f"failed-{audio_id}.txt").write_text(
        f"Transcription of {audio_id} failed (run {ctx.run_id}): {error}\n"
    )


# --- the script -----------------------------------------------------------------------

REQUESTS = [
    {"audio_id": "interview-01", "user_id": "ada", "seconds": 3},
    {"audio_id": "podcast-02", "user_id": "grace", "seconds": 5},
    {"audio_id": "voicemail-03", "user_id": "linus", "seconds": 4},
]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    suffix = f"-{uuid.uuid4().hex[:8]}" if "--fresh" in args else ""
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

    event_ids = [app.send("transcription.requested", data, id=f"demo-{data['audio_id']}{suffix}") for data in REQUESTS]
    console.print(f"sent {len(event_ids)} events to app 'media'; running them in this process…")
    advanced = app.drain(timeout=60)
    if not advanced:
        console.print(
            "[dim]nothing to do: these event ids were sent before (the id is the idempotency "
            "key). Showing the earlier runs; use --fresh to send new events.[/]"
        )

    ok = True
    for event_id in event_ids:
        for summary in app.runs_for_event(event_id):
            run = app.get_run(summary.id)  # with its steps
            print_run(console, run)
            ok = ok and run.status == "completed"
    console.print(
        "\n[dim]attempts=2 on transcribe: its first attempt failed (transient) and was retried"
        "\nafter a short backoff; the step before it was not run again.[/]"
    )
    console.print(f"files: {MEDIA_DIR}/ and {OUTBOX_DIR}/")
    app.close()
    return 0 if ok else 1


def print_run(console: Console, run: conveyor.Run) -> None:
    colour = {"completed": "green", "failed": "red"}.get(run.status, "yellow")
    console.print(
        f"\n[bold]{escape(run.function_id)}[/] [{colour}]{run.status}[/]  "
        f"run {escape(run.id)}  event {escape(run.event_id)}"
    )
    if run.error:
        console.print(f"[red]{escape(json.dumps(run.error))}[/]")
    table = Table()
    table.add_column("step", no_wrap=True, min_width=24)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("attempts", justify="right", no_wrap=True, min_width=8)
    table.add_column("duration", justify="right", no_wrap=True, min_width=8)
    table.add_column("output / error", max_width=52)
    for step in run.steps:
        took = (
            f"{(step.ended_at - step.started_at).total_seconds() * 1000:.0f}ms"
            if step.started_at and step.ended_at
            else "-"
        )
        detail = json.dumps(step.error or step.output, default=str)
        detail = detail if len(detail) <= 60 else detail[:59] + "…"
        status = {"completed": "green", "failed": "red"}.get(step.status, "yellow")
        attempts = f"[yellow]{step.attempts}[/]" if step.attempts > 1 else str(step.attempts)
        cell = Text(detail, no_wrap=True, overflow="ellipsis")
        table.add_row(escape(step.id), f"[{status}]{step.status}[/]", attempts, took, cell)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
