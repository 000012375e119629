"""ripp_cli._heap: start-up objects leave the collector's full passes; later ones do not."""

from __future__ import annotations

import gc
import weakref

from ripp_cli._heap import freeze_startup_heap


class _Node:
    """A cyclic object: only the collector can free it."""

    def __init__(self) -> None:
        self.me = self


def test_freeze_moves_start_up_objects_out_and_still_collects_later_garbage() -> None:
    gc.unfreeze()
    try:
        survivor = _Node()
        garbage = _Node()
        dead = weakref.ref(garbage)
        del garbage
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 1000  # the interpreter's own objects
        # Garbage that existed at start-up was collected first, not frozen for good.
        assert dead() is None
        # A full pass no longer looks at frozen objects: they are not in any generation.
        assert not any(o is survivor for o in gc.get_objects(generation=2))
        # Garbage made after the freeze is still found and freed by a full pass.
        later = _Node()
        ref = weakref.ref(later)
        del later
        gc.collect()
        assert ref() is None
    finally:
        gc.unfreeze()
