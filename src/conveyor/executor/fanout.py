"""``ctx.step.map``: one child run per item, and the lazy sequence of their outputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from conveyor.errors import StepError
from conveyor.executor import codec
from conveyor.executor.ops import FatalRunError
from conveyor.ids import child_id
from conveyor.records import MemoStep, NewChild, NewEvent, StepWrite, Suspended
from conveyor.types import StepKind

if TYPE_CHECKING:
    from conveyor.executor.invocation import Invocation, StorageView

PAGE = 1000  # outputs read per query when iterating results
BATCH = 1000  # children created per transaction


class MapResults(Sequence[Any]):
    """The outputs of a map step's children in item order, read from storage page by page.

    Supports ``len()``, indexing, slicing and iteration, and can be passed to a later
    step (or returned: it is then stored as a list).
    """

    def __init__(self, view: StorageView | None, run_id: str, step_id: str, total: int) -> None:
        self._view = view
        self._run_id = run_id
        self._step_id = step_id
        self._total = total
        self._page_start = -1
        self._page: list[Any] = []

    def __len__(self) -> int:
        return self._total

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._total))]
        if index < 0:
            index += self._total
        if not 0 <= index < self._total:
            raise IndexError("map results index out of range")
        start = index - index % PAGE
        if start != self._page_start:
            self._page = self._load(start)
            self._page_start = start
        return self._page[index - start]

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, self._total, PAGE):
            yield from self._load(start)

    def _load(self, start: int) -> list[Any]:
        if self._view is None:
            raise RuntimeError("map results are not readable outside a run")
        return [codec.loads(o) for o in self._view.children_outputs(self._run_id, self._step_id, start, PAGE)]

    def failures(self) -> list[tuple[int, dict[str, Any]]]:
        """``(index, error)`` of every child that did not complete (reads each child's status)."""
        if self._view is None:
            return []
        out = []
        for i, value in enumerate(self):
            if value is None:
                error = self._view.child_error(self._run_id, self._step_id, i)
                if error is not None:
                    out.append((i, error))
        return out

    def __conveyor_json__(self) -> list[Any]:
        return list(self)

    def __repr__(self) -> str:
        return f"<MapResults step={self._step_id!r} len={self._total}>"


def map_step(
    inv: Invocation, id: str, function: Any, items: Iterable[Any], allow_failures: bool, pool: str | None = None
) -> Any:
    """Create one child run per item, ``BATCH`` at a time, each batch committed with a count of the
    children created so far: a crashed creator resumes after the last committed batch, and the
    items are never all in memory. Then suspend until the last child ends."""
    sid = inv.step_id(id)
    memo = inv.lookup(sid, StepKind.MAP)
    if memo is not None and memo.status in ("completed", "failed"):
        if memo.status == "failed" and not allow_failures:
            raise StepError.from_dict({**(memo.error or {}), "step_id": sid})
        return MapResults(inv.view, inv.run_id, sid, memo.children_total or 0)
    if memo is not None and memo.status == "waiting":
        raise inv.suspend(Suspended(None, "map"))
    with inv.step_span(sid, StepKind.MAP):
        return _create_children(inv, sid, memo, function, items, pool)


def _create_children(
    inv: Invocation, sid: str, memo: MemoStep | None, function: Any, items: Iterable[Any], pool: str | None
) -> Any:
    from conveyor.executor.steps import target_id

    fid = target_id(function)
    inv.require_function(sid, StepKind.MAP, fid)
    try:
        iterator = iter(items)
    except TypeError:
        raise FatalRunError({"step_id": sid, "type": "InvalidInput", "message": "map needs an iterable of items"}) \
            from None
    done = memo.children_created if memo is not None else 0
    started = memo.started_at if memo is not None and memo.started_at else inv.clock()
    seq = inv.next_seq(memo)
    trace = inv.trace_context()  # the children's runs hang under this step's span
    batch: list[NewChild] = []
    index = 0
    for index, item in enumerate(iterator, start=1):
        if index <= done:
            continue  # created before a crash: its batch was committed
        run_id = child_id(inv.run_id, sid, index - 1)
        data = codec.dumps(item, what=f"item {index - 1} of map step {sid!r}")
        event = NewEvent(run_id, "conveyor/map", data, inv.clock(), trace)
        batch.append(NewChild(run_id, fid, event, sid, index - 1, pool))
        if len(batch) >= BATCH:
            inv.checkpoint(StepWrite(sid, StepKind.MAP, "creating", 0, seq, started_at=started, children=batch,
                                     children_created=index))
            batch = []
    if index == 0:
        now = inv.clock()
        inv.emit(StepWrite(sid, StepKind.MAP, "completed", 1, seq, started_at=now, ended_at=now, children_total=0))
        return MapResults(inv.view, inv.run_id, sid, 0)
    write = StepWrite(sid, StepKind.MAP, "waiting", 0, seq, started_at=started, children=batch,
                      children_total=index, children_created=index)
    raise inv.suspend(Suspended(None, "map"), write)
