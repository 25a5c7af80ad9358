"""A training-time budget for demos and smoke runs: stop an iteration-based run after N minutes, cleanly.

When the budget is spent the hook shortens the loop to end after the current iteration, so the usual end-of-training
machinery (CheckpointHook's ``save_last``, the logger) runs as if that had been the planned last iteration.
"""

from __future__ import annotations

import time

from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class TrainTimeBudgetHook(Hook):
    """Stop training after ``max_minutes`` of wall-clock time (iteration-based loops only)."""

    priority = "NORMAL"  # before CheckpointHook (VERY_LOW), which then sees the new last iteration

    def __init__(self, max_minutes: float):
        if max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {max_minutes}")
        self.max_seconds = 60.0 * max_minutes
        self._start = None

    def before_train(self, runner) -> None:
        if not hasattr(runner.train_loop, "_max_iters"):
            raise TypeError("TrainTimeBudgetHook needs an iteration-based train loop (train_cfg.type='IterBasedTrainLoop')")
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        elapsed = time.perf_counter() - self._start
        if elapsed >= self.max_seconds and runner.iter + 1 < runner.train_loop._max_iters:
            runner.logger.info(f"TrainTimeBudgetHook: {elapsed / 60:.1f} min spent, stopping after iteration "
                               f"{runner.iter + 1} of {runner.train_loop._max_iters}")
            runner.train_loop._max_iters = runner.iter + 1
