"""The embedded server leaves what start-up built out of garbage collection (droneflow.runner):
a full collection walking it stopped the event loop for tens of milliseconds."""

import gc

from droneflow.runner import GC_YOUNG_THRESHOLD


async def test_serve_freezes_startup_heap_once(server_factory: object) -> None:
    # Given an embedded server that has started
    await server_factory()  # type: ignore[operator]
    # Then its start-up heap is frozen and the young generation is collected less often
    frozen = gc.get_freeze_count()
    assert frozen > 0
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    # When a second server starts in the same process
    await server_factory()  # type: ignore[operator]
    # Then it freezes nothing more: the first server's objects stay collectable
    assert gc.get_freeze_count() <= frozen
