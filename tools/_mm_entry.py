"""What tools/train.py and tools/test.py share: make the repo importable from a clone, load and adjust a config.

Works from an install without a clone of mmdet / mmseg: configs inherit their bases through the package scope syntax
(``mmdet::``), and the Runner takes its registry scope from the config's ``default_scope``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def make_repo_importable() -> None:
    """``python tools/train.py`` from a clone that is not installed: map the clone's folders to ``attnzoo`` (an installed
    attnzoo wins; tools/ is on sys.path, the repository root never is)."""
    from _clone_import import make_attnzoo_importable

    make_attnzoo_importable()


def add_common_args(parser: argparse.ArgumentParser) -> None:
    from mmengine.config import DictAction

    parser.add_argument("--work-dir", help="where logs and checkpoints go (default: ./work_dirs/<config name>)")
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction,
        help="override config keys, key=value (e.g. train_cfg.max_iters=20 'model.backbone.out_indices=[1,2,3]')")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="'pytorch' under torchrun (multi-GPU / multi-node DDP), 'slurm' under srun")
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)


def load_config(args):
    """Config from file + CLI overrides, with work_dir and launcher set; the glue is imported first."""
    make_repo_importable()
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    # The glue makes mmengine read checkpoints through the zoo's reader (weights-only, with the Runner's extra globals
    # for those reads only) and registers ZooBackbone, also for configs that do not list it in custom_imports.
    import attnzoo.openmmlab  # noqa: F401
    from attnzoo.openmmlab.configs import read_config

    cfg = read_config(args.config)  # a config saved by attnzoo 0.1 names its old modules: read_config moves them
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    if cfg.get("default_scope", None) is None:
        raise SystemExit(f"{args.config} sets no default_scope; inherit an mmdet:: or mmseg:: base (or set "
                         "default_scope='mmdet' / 'mmseg') so the Runner knows which registries to use")
    return cfg


@contextlib.contextmanager
def one_error_line(tool: str):
    """A mistake the zoo names (``attnzoo.errors.ZooError``: a checkpoint that is refused or unreadable, ...) or a missing
    file ends the tool with one line, ``<tool>: error: <message>``, and exit code 2, as the ``zoo`` command does."""
    from attnzoo.errors import EXIT_USER_ERROR, ZooError

    try:
        yield
    except (ZooError, FileNotFoundError) as err:
        print(f"{tool}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None


def check_checkpoint(path: str, tool: str) -> None:
    """Read a local checkpoint once through the zoo's reader (as the Runner will, with its extra globals) before the
    Runner starts, so that a refused or damaged file ends the tool with one line instead of a traceback after the
    Runner's start-up log. URLs are left to mmengine."""
    if "://" in path:
        return
    from attnzoo.openmmlab.checkpoints import load_from_zoo_reader

    with one_error_line(tool):
        load_from_zoo_reader(path, map_location="cpu")


def _sync_bn_to_bn(node) -> int:
    """Turn every ``type='SyncBN'`` in a config subtree into ``'BN'``; returns how many were changed."""
    changed = 0
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
            changed += 1
        for value in node.values():
            changed += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            changed += _sync_bn_to_bn(value)
    return changed


def prepare_cpu_distributed(cfg) -> bool:
    """Under torchrun without CUDA, make the Runner's distributed path work on the CPU; True when it applied.

    mmengine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device`` unconditionally and its DDP wrapper passes
    ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU module. So: join the gloo process group here (the Runner
    then skips its own init), wrap without ``device_ids``, and use plain BN where the config asks for SyncBN (torch's
    SyncBatchNorm only synchronises CUDA tensors; each process then keeps its own batch statistics).
    """
    import torch

    if cfg.launcher != "pytorch" or torch.cuda.is_available():
        return False
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    cfg.env_cfg = {**cfg.get("env_cfg", {}), "dist_cfg": dict(backend="gloo")}
    wrapper = dict(cfg.get("model_wrapper_cfg") or dict(
        type="MMDistributedDataParallel", broadcast_buffers=False,
        find_unused_parameters=cfg.get("find_unused_parameters", False)))
    wrapper["device_ids"] = None
    cfg.model_wrapper_cfg = wrapper
    if _sync_bn_to_bn(cfg.model) and dist.get_rank() == 0:
        print("CPU distributed run: SyncBN replaced by BN (SyncBatchNorm needs CUDA tensors)", flush=True)
    return True


def finish_distributed() -> None:
    """End a torchrun process deterministically: every rank waits for the others, then leaves the process group
    (gloo's connections closed in order, not torn down by interpreter exit while a peer is still closing, which can
    abort a rank with SIGABRT). Nothing in a single process.

    The caller drops its Runner first: the DDP wrapper's reducer holds the group, and one left for interpreter exit
    tears its gloo pairs down after the group is gone, in no fixed order across the ranks. What still refers to it is
    collected here, before the barrier."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from attnzoo.openmmlab import follow_standard_streams

    prepare_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    follow_standard_streams()  # the Runner's logger writes to sys.stdout as it is then, not as it was now
    return runner
