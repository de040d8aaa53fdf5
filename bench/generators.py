"""Generator processes: the Fleet in this process, or one Fleet per child process driven over
a pipe; and the event loop they run on (uvloop when installed)."""

import asyncio
import multiprocessing
import os
import traceback
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

from fleet import Fleet, FleetSpec, PhaseResult


class InProcessGenerator:
    def __init__(self, spec: FleetSpec) -> None:
        self.fleet = Fleet(spec)
        self.pids = [os.getpid()]

    async def open(self) -> None:
        await self.fleet.open()

    async def run_phase(
        self,
        phase: str,
        quotas: dict[str, int],
        stall_s: float,
        app_rate_per_s: float | None = None,
    ) -> PhaseResult:
        return await self.fleet.run_phase(phase, quotas, stall_s, app_rate_per_s)

    async def close(self) -> None:
        await self.fleet.close()


class ChildProcessGenerator:
    """One Fleet per child process, driven over a pipe: (phase, quotas, stall_s, rate) → result."""

    def __init__(self, specs: list[FleetSpec]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.children = []
        for spec in specs:
            mine, theirs = context.Pipe()
            child = context.Process(target=_child_main, args=(theirs, spec), daemon=True)
            child.start()
            self.pipes.append(mine)
            self.children.append(child)
        self.pids = [os.getpid(), *(child.pid for child in self.children if child.pid)]

    async def _ask_all(self, message: Any) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(message)
        return await self._answers()

    async def _answers(self) -> list[Any]:
        answers = await asyncio.gather(*(asyncio.to_thread(pipe.recv) for pipe in self.pipes))
        for answer in answers:
            if isinstance(answer, str):
                raise SystemExit(f"generator process failed:\n{answer}")
        return answers

    async def open(self) -> None:
        await self._answers()  # each child says "ready" (None) once connected

    async def run_phase(
        self,
        phase: str,
        quotas: dict[str, int],
        stall_s: float,
        app_rate_per_s: float | None = None,
    ) -> PhaseResult:
        total = PhaseResult()
        for result in await self._ask_all((phase, quotas, stall_s, app_rate_per_s)):
            total.merge(result)
        return total

    async def close(self) -> None:
        await self._ask_all(None)
        for child in self.children:
            child.join(10)


def _child_main(pipe: Connection, spec: FleetSpec) -> None:
    run_loop(lambda: _child(pipe, spec))


async def _child(pipe: Connection, spec: FleetSpec) -> None:
    fleet = Fleet(spec)
    try:
        await fleet.open()
        pipe.send(None)
        while (command := await asyncio.to_thread(pipe.recv)) is not None:
            pipe.send(await fleet.run_phase(*command))
        await fleet.close()
        pipe.send(None)
    except BaseException:
        pipe.send(traceback.format_exc())
        raise


def run_loop(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())
