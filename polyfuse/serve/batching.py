"""Micro-batching: requests arriving within a short window share one model forward pass."""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """``await submit(item)`` -> ``run([items])[i]``.

    With ``window_ms`` > 0 the first item of a batch waits up to that long for others (at most
    ``max_batch``), then ``run`` is called once in a worker thread for all of them. With 0
    every item runs alone, still off the event loop. ``run`` returns one result per item, in order;
    an exception fails every item of that batch.
    """

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R]],
        window_ms: float = 0.0,
        max_batch: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if window_ms < 0:
            raise ValueError(f"batch window must be >= 0 ms, got {window_ms}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run = run
        self.window = window_ms / 1000.0
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        if self.window <= 0:
            return (await self._call([item]))[0]
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._wait_then_flush())
        return await future

    async def _wait_then_flush(self) -> None:
        await asyncio.sleep(self.window)
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if self._pending:
            self._timer = asyncio.create_task(self._wait_then_flush())
        if batch:
            asyncio.create_task(self._resolve(batch))

    async def _resolve(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._call([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)

    async def _call(self, items: list[T]) -> Sequence[R]:
        if self.on_batch is not None:
            self.on_batch(len(items))
        results = await asyncio.to_thread(self.run, items)
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        return results


__all__ = ["MicroBatcher"]
