"""The shared time limit of gateway.deadlines: a call past it fails with TimeoutError, a call
that ended in time is never cancelled afterwards, a later call gets its own full limit, and a
cancellation from elsewhere stays a cancellation."""

import asyncio

import pytest

from shared.deadlines import Deadlines

SHORT_S = 0.05


async def test_a_call_past_the_limit_raises_timeout_error() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await Deadlines(SHORT_S).run(never)
    assert never.cancelled()  # the awaited call was cancelled, as asyncio.timeout does


async def test_a_call_that_ended_in_time_is_not_cancelled_later() -> None:
    deadlines = Deadlines(SHORT_S)
    assert await deadlines.run(asyncio.sleep(0, result="done")) == "done"
    # The same task now waits past the finished call's deadline; a second call starting
    # later keeps the timer going until after that deadline.
    started = asyncio.Event()

    async def later() -> None:
        started.set()
        await deadlines.run(asyncio.get_running_loop().create_future())

    late = asyncio.create_task(later())
    await started.wait()
    with pytest.raises(TimeoutError):
        await late  # the timer fired, for this call only


async def test_each_call_gets_the_whole_limit() -> None:
    """A call that starts while an older one waits is not cut short at the older deadline."""
    deadlines = Deadlines(2.0)
    loop = asyncio.get_running_loop()
    older = asyncio.create_task(deadlines.run(loop.create_future()))
    await asyncio.sleep(1.0)  # the younger call's deadline is a second after the older's
    younger_done: asyncio.Future[str] = loop.create_future()
    younger = asyncio.create_task(deadlines.run(younger_done))
    with pytest.raises(TimeoutError):
        await older
    assert not younger.done()  # half its limit is left
    younger_done.set_result("in time")
    assert await younger == "in time"


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def call() -> None:
        started.set()
        await Deadlines(60.0).run(asyncio.get_running_loop().create_future())

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_calls_of_many_tasks_each_time_out() -> None:
    deadlines = Deadlines(SHORT_S)
    loop = asyncio.get_running_loop()
    calls = [asyncio.create_task(deadlines.run(loop.create_future())) for _ in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, TimeoutError) for result in results)
