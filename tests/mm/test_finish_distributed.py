"""Issue 35 item 10 (what was left): a torchrun process leaves its gloo group deterministically.

``tools/train.py`` / ``tools/test.py`` (``_mm_entry.finish_distributed``) and the zoo's verbs
(``attnzoo.tasks.classification.stop_processes``) destroy the process group at the end. What still holds the group
then (a DDP wrapper: its reducer, in reference cycles with the Runner and its loops) was left for interpreter exit,
which tore its gloo connections down after the group, in no fixed order across the ranks (``[seg]`` aborted with -6
once under load). Now it is collected before the barrier: nothing that holds the group outlives it.
"""

from __future__ import annotations

import gc
import weakref

import _mm_entry  # tools/ (tests/mm/conftest.py puts it on sys.path)
import pytest
import torch
import torch.distributed as dist

from attnzoo.tasks.classification.distributed import Processes, stop_processes


class _HoldsTheGroup:
    """Stands in for a Runner with its DDP wrapper: garbage only a collection frees (a reference cycle)."""

    def __init__(self):
        self.me = self


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize("finish", ["tools", "zoo verbs"])
def test_what_holds_the_group_is_gone_before_the_group_is_destroyed(finish, one_rank_group, monkeypatch):
    holder = _HoldsTheGroup()
    alive = weakref.ref(holder)
    del holder  # the caller dropped it (tools/train.py: `del runner`); the cycle keeps it until a collection
    gone_at_destroy = []
    destroy = dist.destroy_process_group

    def recording_destroy(*args, **kwargs):
        gone_at_destroy.append(alive() is None)
        return destroy(*args, **kwargs)

    monkeypatch.setattr(dist, "destroy_process_group", recording_destroy)
    gc.disable()  # no automatic collection in between: only the code under test may collect
    try:
        if finish == "tools":
            _mm_entry.finish_distributed()
        else:  # world_size 2 marks a torchrun process; the one-rank group answers the barrier alone
            stop_processes(Processes(device=torch.device("cpu"), world_size=2))
    finally:
        gc.enable()
    assert gone_at_destroy == [True] and not dist.is_initialized()
