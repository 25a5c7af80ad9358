"""TransNeXt and MoH-TransNeXt backbones at dense-task sizes on the CPU, side by side in one run (issue 33).

    python tools/benchmarks/transnext_dense.py --official-file /tmp/TransNeXt/detection/maskrcnn/transnext_native.py \\
        --before-tree /tmp/attnzoo-main --sizes 224,512,800 --out docs/bench_cpu_transnext/dense

Every (side, size) runs in its own Python process, one at a time (the machine is shared: the large sizes never run
together), in the order size by size, so each size's rows are taken back to back and read as ratios. With
``--interleave R`` every side's process of a size is started and built first, then they take one step each in turn
for R rounds (the first a warm-up), so a load that comes and goes on a shared machine falls on every side alike
(still only one process computes at a time). A process
imports what its side needs, then builds the backbone (random weights, train mode, no drop path), then runs
``--repeats`` forward + backward passes of batch 1 at ``size x size`` (the loss: the sum of the means of the four
feature maps) and reports the median step as wall-clock and as process CPU seconds, and the peak resident set
(VmHWM) above the resident set after its imports (so the parameters, their gradients and the activations count; the
libraries do not). With a warm-up step (``--warm-up``, ``--interleave`` R > 1, ``compile:``) the peak restarts after
it: the zoo builds its size tables on its first call, the official code in its constructor, and neither is a step.

Sides (``--sides``, comma-separated ``kind:name``):

- ``zoo:<timm name>``: this checkout's model (``timm.create_model(name, features_only=True)``, ``import attnzoo``);
- ``before:<timm name>``: the same model from another attnzoo tree (``--before-tree``, e.g. ``git archive`` of main
  before a change: its folders are mapped into ``attnzoo`` ahead of the installed package);
- ``official:transnext_tiny``: DaiShiResearch/TransNeXt ``detection/maskrcnn/transnext_native.py`` (the native,
  unfold path; not part of this repository: pass the file with ``--official-file``; its mmdet 2 / mmcv 1 imports are
  stubbed, only the backbone runs), built at the input size with ``pretrain_size=224`` as its configs do;
- ``timm:<timm name>``: a timm model at that size (``img_size=size``), e.g. ``swin_tiny_patch4_window7_224``;
- ``compile:<timm name>``: the zoo model under ``torch.compile`` (inductor, CPU); the median excludes the first
  (compiling) step, so use ``--repeats`` >= 2;
- ``mmdet:<config>`` / ``mmseg:<config>``: an OpenMMLab config of this repository built with its registries, one
  training step (``model.loss``) on random images (detection: one ``--det-size`` H x W image with two boxes and
  masks; segmentation: two ``size`` x ``size`` images with random label maps, the config's batch per GPU, since its
  pyramid pooling's BatchNorm cannot train on one 1x1 map).

Writes ``<out>/dense.json`` and ``<out>/dense.md``; ``--print-only`` prints the table without writing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SIDES = ("official:transnext_tiny,zoo:transnext_tiny,timm:swin_tiny_patch4_window7_224,"
                 "zoo:moh_transnext_small_75,zoo:moh_transnext_small_80")

# the official TransNeXt-T factory (detection/maskrcnn/transnext_native.py ``transnext_tiny``), without drop path
OFFICIAL_TINY = dict(window_size=[3, 3, 3, None], patch_size=4, embed_dims=[72, 144, 288, 576],
                     num_heads=[3, 6, 12, 24], mlp_ratios=[8, 8, 4, 4], qkv_bias=True, depths=[2, 2, 15, 2], sr_ratios=[8, 4, 2, 1],
                     drop_rate=0.0, drop_path_rate=0.0)


# ---------------------------------------------------------------------------------------------------- the worker


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """The resident set's high-water mark (Linux VmHWM, which :func:`_reset_peak` restarts; else ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Restart the high-water mark from the present resident set (Linux: 5 into /proc/self/clear_refs), so a
    warm-up step's peak (the zoo builds its size tables on its first call) is not counted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    """glibc's malloc_trim(0): return freed heap memory to the system (no-op elsewhere)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _use_tree(tree: str) -> None:
    """Import attnzoo from ``tree`` (a checkout's four folders) ahead of the installed package."""
    sys.path.insert(0, str(REPO / "tools"))
    from _clone_import import CloneFinder

    sys.meta_path.insert(0, CloneFinder(Path(tree).resolve()))


def _load_official(path: str):
    """The official backbone module, its mmdet 2 / mmcv 1 imports stubbed (registration and checkpoint loading are
    not used)."""
    import importlib.util
    import types

    class _Registry:
        def register_module(self, *args, **kwargs):
            return (lambda cls: cls) if not args or not isinstance(args[0], type) else args[0]

    stubs = {"mmdet": {}, "mmdet.models": {}, "mmdet.models.builder": {"BACKBONES": _Registry()},
             "mmdet.utils": {"get_root_logger": lambda *a, **k: None}, "mmcv": {},
             "mmcv.runner": {"load_checkpoint": lambda *a, **k: None}}
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    spec = importlib.util.spec_from_file_location("_official_transnext_native", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(kind: str, name: str, size: int, args):
    """(model, step) for one side; ``step()`` runs one forward + backward."""
    import torch

    if kind == "official":
        from functools import partial

        official = _load_official(args.official_file)
        if name != "transnext_tiny":
            raise SystemExit(f"official side {name!r}: only transnext_tiny is wired")
        model = official.TransNeXt(img_size=size, pretrain_size=224, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                   **OFFICIAL_TINY)
    elif kind in ("zoo", "before", "compile"):
        import timm

        import attnzoo  # noqa: F401  (registers the families)

        model = timm.create_model(name, features_only=True)
    elif kind == "timm":
        import timm

        model = timm.create_model(name, features_only=True, img_size=size)
    elif kind in ("mmdet", "mmseg"):
        return _build_mm(kind, name, size, args)
    else:
        raise SystemExit(f"unknown side kind {kind!r}")
    model.train()
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    forward = torch.compile(model) if kind == "compile" else model

    def step():
        outs = forward(image)
        sum(o.float().mean() for o in outs).backward()
        model.zero_grad(set_to_none=True)

    return model, step


def _build_mm(kind, config, size, args):
    """One training step of an OpenMMLab config's model on one random image (detection: two boxes with masks)."""
    import torch

    if kind == "mmdet":
        import mmdet.utils

        mmdet.utils.register_all_modules()
        from mmdet.registry import MODELS
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        height, width = (int(v) for v in args.det_size.split("x"))
    else:
        import mmseg.utils

        mmseg.utils.register_all_modules()
        from mmengine.structures import PixelData
        from mmseg.registry import MODELS
        from mmseg.structures import SegDataSample

        height = width = size
    from attnzoo.openmmlab.configs import read_config

    cfg = read_config(config)
    cfg.model.get("backbone", {}).pop("pretrained", None)
    if "init_cfg" in cfg.model.get("backbone", {}):
        cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.train()
    gen = torch.Generator().manual_seed(0)
    batch = 1 if kind == "mmdet" else 2  # UperNet's pyramid pooling has BatchNorm on 1x1 maps: batch 2 (its config's)
    image = torch.randn(batch, 3, height, width, generator=gen)
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                scale_factor=(1.0, 1.0), batch_input_shape=(height, width))
    if kind == "mmdet":
        sample = DetDataSample(metainfo=meta)
        boxes = torch.tensor([[10.0, 20.0, width / 2, height / 2], [width / 3, height / 3, width - 5.0, height - 5.0]])
        masks = torch.zeros(2, height, width, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        from mmdet.structures.mask import BitmapMasks

        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([1, 2]),
                                           masks=BitmapMasks(masks.numpy(), height, width))
    else:
        sample = SegDataSample(metainfo=meta)
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, height, width), generator=gen))

    def step():
        losses = model.loss(image, [sample] * batch)
        sum(v.sum() if torch.is_tensor(v) else sum(x.sum() for x in v) for k, v in losses.items()
            if "loss" in k).backward()
        model.zero_grad(set_to_none=True)

    return model, step


def worker(side: str, size: int, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    kind, name = side.split(":", 1)
    if kind == "before":
        _use_tree(args.before_tree)
    if kind in ("zoo", "before", "compile", "mmdet", "mmseg"):
        import attnzoo  # noqa: F401
    if kind in ("mmdet", "mmseg"):
        import attnzoo.openmmlab  # noqa: F401
        __import__(kind)
    import timm  # noqa: F401

    base = _rss_mib()
    model, step = _build(kind, name, size, args)
    walls, cpus = [], []

    # a compiling step, the interleaved warm-up round, or --warm-up (the zoo's size tables built on its first call)
    warms_up = kind == "compile" or args.serve or (args.warm_up and args.repeats > 1)
    peak_reset = False

    def timed_step():
        nonlocal peak_reset
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if warms_up and len(walls) == 1:  # the warm-up's peak is not the step's
            _trim()
            peak_reset = _reset_peak()
        return dict(wall_s=walls[-1], cpu_s=cpus[-1])

    if args.serve:  # interleaved: one step per "step" line on stdin, until "quit"
        print(json.dumps(dict(ready=True)), flush=True)
        for line in sys.stdin:
            if line.strip() != "step":
                break
            reply = timed_step()
            _trim()  # hand the step's freed memory back, so the waiting processes do not hold their peaks
            print(json.dumps(reply), flush=True)
    else:
        for _ in range(args.repeats):
            timed_step()
    warm = 1 if warms_up and len(walls) > 1 else 0
    timed = slice(warm, None)
    result = dict(side=side, size=size, wall_s=statistics.median(walls[timed]), cpu_s=statistics.median(cpus[timed]),
                  steps_wall_s=walls, steps_cpu_s=cpus, peak_mib=_peak_mib() - base, peak_abs_mib=_peak_mib(), base_mib=base,
                  peak_after_warm_up=peak_reset)
    if kind == "before":
        import attnzoo.kernels.aggregated_attention as agg

        result["tree"] = str(Path(agg.__file__).resolve().parents[1])
    return result


# ---------------------------------------------------------------------------------------------------- the driver


def run_side(side: str, size: int, args) -> dict:
    command = _worker_command(side, size, args)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return dict(side=side, size=size, error=f"timed out after {args.timeout} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(side=side, size=size, error=f"exit {done.returncode}: {tail[:200]}")
    result = json.loads(lines[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def _worker_command(side: str, size: int, args) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--size", str(size),
               "--threads", str(args.threads), "--repeats", str(args.repeats), "--det-size", args.det_size]
    if args.warm_up:
        command.append("--warm-up")
    if args.official_file:
        command += ["--official-file", args.official_file]
    if args.before_tree:
        command += ["--before-tree", args.before_tree]
    return command


def _read_json(child) -> dict | None:
    """The child's next JSON line (other output skipped); None at its end."""
    for line in child.stdout:
        if line.startswith("{"):
            return json.loads(line)
    return None


def run_interleaved(sides: list[str], size: int, args) -> list[dict]:
    """Every side's process alive at once (built, waiting), stepped one at a time in turn for ``--interleave``
    rounds (the order rotating each round), so load from other jobs on a shared machine falls on every side alike;
    only one process computes at any moment."""
    children, results = {}, {}
    for side in sides:
        child = subprocess.Popen(_worker_command(side, size, args) + ["--serve"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        children[side] = child
        if _read_json(child) is None:  # wait until built: builds one at a time too
            results[side] = dict(side=side, size=size, error=f"exit {child.wait()}: no ready line")
    live = [s for s in sides if s not in results]
    for round_index in range(args.interleave):
        shift = round_index % max(1, len(live))
        for side in live[shift:] + live[:shift]:
            children[side].stdin.write("step\n")
            children[side].stdin.flush()
            _read_json(children[side])
    for side in live:
        child = children[side]
        out, _ = child.communicate("quit\n", timeout=args.timeout)
        lines = [line for line in out.splitlines() if line.startswith("{") and '"side"' in line]
        results[side] = json.loads(lines[-1]) if lines else dict(side=side, size=size, error=f"exit {child.returncode}")
    return [results[side] for side in sides]


def _ratio(value, base):
    return f"{value / base:.2f}x" if value is not None and base else "-"


def markdown(results: list[dict], args) -> str:
    import platform

    import torch

    sides = list(dict.fromkeys(r["side"] for r in results))
    rounds = (f"{max(1, args.interleave - 1)} interleaved round(s) after {min(1, args.interleave - 1)} warm-up"
              if args.interleave else f"{args.repeats - 1} step(s) after 1 warm-up" if args.warm_up and args.repeats > 1
              else f"{args.repeats} step(s)")
    how = "stepped in turn" if args.interleave else "run one after another"
    lines = [f"Machine: {platform.machine()} CPU, {os.cpu_count()} logical cores (shared), torch {torch.__version__}, "
             f"{args.threads} thread(s); batch 1, one forward + backward of the backbone's four maps (train mode, "
             f"random weights), median of {rounds}; each row its own process, {how}. Peak: "
             "the resident set's high-water mark above the resident set after the imports (parameters, gradients, "
             "activations), restarted after the warm-up step where there is one (VmHWM).", ""]
    ref_side = next((s for s in sides if s.startswith("official:")), None)
    swin_side = next((s for s in sides if "swin" in s), None)
    lines.append("| size | side | peak MiB | CPU s | wall s | memory vs official | time vs official | memory vs Swin-T "
                 "| time vs Swin-T |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in dict.fromkeys(r["size"] for r in results):
        rows = {r["side"]: r for r in results if r["size"] == size}
        ref, swin = rows.get(ref_side, {}), rows.get(swin_side, {})
        for side in sides:
            r = rows.get(side)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {size} | {side} | {r['error']} | | | | | | |")
                continue
            lines.append(
                f"| {size} | {side} | {r['peak_mib']:.0f} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} | "
                f"{_ratio(r['peak_mib'], ref.get('peak_mib'))} | {_ratio(r['cpu_s'], ref.get('cpu_s'))} | "
                f"{_ratio(r['peak_mib'], swin.get('peak_mib'))} | {_ratio(r['cpu_s'], swin.get('cpu_s'))} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", default=DEFAULT_SIDES, help=f"comma-separated kind:name (default {DEFAULT_SIDES})")
    parser.add_argument("--sizes", default="224,512,800", help="square input sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="forward + backward steps per process (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process")
    parser.add_argument("--official-file", help="DaiShiResearch/TransNeXt detection/maskrcnn/transnext_native.py")
    parser.add_argument("--before-tree", help="another attnzoo checkout for the before: sides")
    parser.add_argument("--det-size", default="800x1216", help="H x W of the mmdet: sides' image")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--out", default=str(REPO / "docs" / "bench_cpu_transnext" / "dense"))
    parser.add_argument("--interleave", type=int, default=0,
                        help="R > 0: per size, start every side's process, then step them in turn for R rounds "
                             "(the first a warm-up when R > 1; median of the others per side); 0: one process "
                             "after another, --repeats steps each")
    parser.add_argument("--warm-up", action="store_true",
                        help="one process after another: the first of the --repeats steps is a warm-up (the zoo "
                             "builds its size tables on its first call, the official code in its constructor)")
    parser.add_argument("--print-only", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args)), flush=True)
        return
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    for side in sides:
        kind = side.split(":", 1)[0]
        if kind == "official" and not args.official_file:
            raise SystemExit("official: sides need --official-file (DaiShiResearch/TransNeXt transnext_native.py)")
        if kind == "before" and not args.before_tree:
            raise SystemExit("before: sides need --before-tree")
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        for result in run_interleaved(sides, size, args) if args.interleave else (run_side(s, size, args)
                                                                                   for s in sides):
            results.append(result)
            print(json.dumps(result), flush=True)
    table = markdown(results, args)
    print(table)
    if not args.print_only:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "dense.json").write_text(json.dumps(dict(results=results, argv=sys.argv[1:]), indent=1) + "\n")
        (out / "dense.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
