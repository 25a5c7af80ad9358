"""CPU training step time under three thread settings, idle and under load (issue 26, "threads that fit the machine").

    python tools/benchmarks/threads.py --out bench_out/threads          # ~10 min on 2 cores
    python tools/benchmarks/threads.py --batches 6 --load 0 --models resnet18

Settings (each case a fresh process, so torch reads its thread setting at start):

- ``old``: the defaults before issue 26: torch's own intra-op threads (one per core) and ``min(4, os.cpu_count())``
  loader workers;
- ``omp1``: the same workers with ``OMP_NUM_THREADS=1``;
- ``new``: ``attnzoo.tasks.classification.start_processes("cpu")``, as ``zoo train`` starts now (threads and workers
  from the CPUs the process may use: ``cpu_plan``);
- ``TxW`` (e.g. ``2x0``): T threads (``OMP_NUM_THREADS``) and W workers, to compare other splits.

Each process runs ``zoo train``'s step on ``zoo train``'s loader (timm's ``create_loader`` with the same arguments as
``zoo/tasks/classification/training.py``: random-resized crop, colour jitter, flip; AdamW, label smoothing) over an
ImageFolder from tools/make_imagefolder.py, and reports the median wall-clock seconds per batch (data wait + step)
after ``--warmup`` batches, and the main process's CPU seconds per batch. Load: ``--load`` extra processes that spin
(``while 1: pass``), started before the case and killed after it. Cases run model by model, the three settings back to
back, so they share the machine's state; the table gives each setting's ratio to ``old``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()

TINY_BIFORMER = dict(depth=(1, 1, 1, 1), embed_dim=(32, 64, 96, 128), qk_dims=(32, 64, 96, 128), n_win=2,
                     topks=(1, 2, 4, -2))
MODELS = {  # name: (timm name, image size, model kwargs)
    "biformer-tiny-32": ("biformer_tiny", 32, TINY_BIFORMER),
    "resnet18": ("resnet18", 64, {}),
}
SETTINGS = ("old", "omp1", "new")


def child(args: argparse.Namespace) -> None:
    """One case in this process: print one JSON line."""
    if args.setting == "new":
        from attnzoo.tasks.classification import start_processes

        workers = start_processes("cpu").workers
    elif "x" in args.setting:  # an explicit THREADSxWORKERS setting (the parent set OMP_NUM_THREADS)
        workers = int(args.setting.split("x")[1])
    else:
        workers = min(4, os.cpu_count() or 1)  # zoo/commands/validate.py's DEFAULT_WORKERS before issue 26
    import torch
    from timm.data import create_loader, resolve_model_data_config
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2

    from attnzoo.models import build_model
    from attnzoo.tasks.classification import build_dataset, scan_image_folder

    name, size, kwargs = MODELS[args.model]
    torch.manual_seed(0)
    scan = scan_image_folder(Path(args.data) / "train", check_images=False, verbose=False)
    dataset = build_dataset(scan, {c: i for i, c in enumerate(scan.classes)})
    model = build_model(name, pretrained=False, num_classes=len(scan.classes), **kwargs)
    config = resolve_model_data_config(model, args={"img_size": size})
    loader = create_loader(
        dataset, input_size=config["input_size"], batch_size=args.batch_size, is_training=True, no_aug=False,
        scale=(0.08, 1.0), color_jitter=0.4, hflip=0.5, interpolation=config["interpolation"], mean=config["mean"],
        std=config["std"], num_workers=workers, use_prefetcher=False, device=torch.device("cpu"), pin_memory=False,
        persistent_workers=workers > 0)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    criterion = LabelSmoothingCrossEntropy(smoothing=0.1)
    model.train()
    walls, cpus = [], []
    done = 0
    while done < args.warmup + args.batches:
        last_wall, last_cpu = time.perf_counter(), time.process_time()
        for inputs, targets in loader:
            loss = criterion(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            now_wall, now_cpu = time.perf_counter(), time.process_time()
            if done >= args.warmup:
                walls.append(now_wall - last_wall)
                cpus.append(now_cpu - last_cpu)
            last_wall, last_cpu = now_wall, now_cpu
            done += 1
            if done >= args.warmup + args.batches:
                break
    print(json.dumps(dict(model=args.model, setting=args.setting, threads=torch.get_num_threads(), workers=workers,
                          s_per_batch=statistics.median(walls), cpu_s_per_batch=statistics.median(cpus),
                          batches=len(walls))))


def run_case(args: argparse.Namespace, model: str, setting: str, data: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if setting == "omp1":
        env["OMP_NUM_THREADS"] = "1"
    elif "x" in setting:
        env["OMP_NUM_THREADS"] = setting.split("x")[0]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, __file__, "--child", "--model", model, "--setting", setting, "--data", str(data),
               "--batches", str(args.batches), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.case_timeout)
    if done.returncode != 0:
        raise SystemExit(f"{model}/{setting} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--load", default="0,2", help="comma-separated numbers of spinning processes (default 0,2)")
    parser.add_argument("--batches", type=int, default=8, help="timed batches per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (worker start-up)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--case-timeout", type=int, default=600)
    parser.add_argument("--out", default="bench_out/threads")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return

    import make_imagefolder

    from attnzoo.tasks.classification.distributed import cpu_plan
    from attnzoo.tasks.measure import environment, machine_label, markdown_table, write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        per_class = -(-(args.warmup + args.batches) * args.batch_size // 6)  # one epoch holds every batch
        data = make_imagefolder.make(Path(tmp) / "shapes", num_train=per_class, num_val=0, size=64, seed=0)
        for load in (int(n) for n in args.load.split(",")):
            spinners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(load)]
            try:
                for model in args.models.split(","):
                    by_setting = {}
                    loadavg = os.getloadavg()[0]
                    for setting in args.settings.split(","):
                        by_setting[setting] = result = run_case(args, model, setting, data)
                        result.update(load=load, loadavg_1min=round(loadavg, 2))
                        results.append(result)
                        print(json.dumps(result), flush=True)
                    base = by_setting.get("old", {}).get("s_per_batch")
                    for setting, r in by_setting.items():
                        rows.append([model, f"{load} spinning" if load else "idle", f"{loadavg:.1f}", setting,
                                     f"{r['threads']} / {r['workers']}", f"{r['s_per_batch']:.3f}",
                                     f"{r['cpu_s_per_batch']:.3f}",
                                     f"{r['s_per_batch'] / base:.2f}" if base else "-"])
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
    plan = cpu_plan()
    table = markdown_table(["model", "load", "load avg", "setting", "threads / workers", "s / batch",
                            "main CPU s / batch", "vs old"], rows, align="lllllrrr")
    header = (f"{machine_label('cpu')}; {plan.cpus} CPUs available; batch {args.batch_size}, median of "
              f"{args.batches} batches after {args.warmup}")
    (out / "threads.md").write_text(f"{header}\n\n{table}\n")
    write_json(out / "threads.json", {"environment": environment("cpu"), "results": results})
    print(f"\n{header}\n\n{table}")


if __name__ == "__main__":
    main()
