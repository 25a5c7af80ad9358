"""`zoo validate` throughput (images/s through the whole pipeline: decode, resize, crop, model) for zoo models next to
timm models on the same ImageFolder, measured in one run with the models interleaved round by round, so a machine
shared with other work slows all of them alike; the ratios are the result, the absolute numbers are of that moment.

    python tools/make_imagefolder.py /tmp/shapes224 --num-train 1 --num-val 32 --size 224
    python tools/benchmarks/validate.py --data /tmp/shapes224/val --models biformer_tiny,poolformer_s12 \\
        --peers convnext_tiny,resnet50 --rounds 3 --out docs/bench_validate

Random weights (``--random-init``) with a head sized to the folder: the speed of a checkpoint is the same. Machine label,
table and JSON: attnzoo.tasks.measure (docs/ARCHITECTURE.md, "Measuring").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()


def measure(model: str, data: str, num_classes: int, batch_size: int, workers: int, device: str) -> dict:
    from attnzoo.cli import main

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["validate", model, "--data", data, "--random-init", "--model-kwargs", f"num_classes={num_classes}",
                     "--batch-size", str(batch_size), "--workers", str(workers), "--device", device,
                     "--no-image-check"])
    if code != 0:
        raise SystemExit(f"zoo validate {model} failed with exit code {code}")
    return json.loads(buffer.getvalue().strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="an ImageFolder (class sub-folders)")
    parser.add_argument("--models", default="biformer_tiny,poolformer_s12")
    parser.add_argument("--peers", default="convnext_tiny,resnet50", help="timm models to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="folder for validate.json and validate.md")
    args = parser.parse_args(argv)

    from attnzoo.tasks.measure import device_label, environment, markdown_table, write_json

    models = [m for m in args.models.split(",") if m]
    peers = [m for m in args.peers.split(",") if m]
    num_classes = sum(1 for p in Path(args.data).iterdir() if p.is_dir())
    speeds: dict[str, list[float]] = {m: [] for m in models + peers}
    last: dict[str, dict] = {}
    for round_index in range(args.rounds):
        for model in models + peers:
            result = measure(model, args.data, num_classes, args.batch_size, args.workers, args.device)
            speeds[model].append(result["images_per_s"])
            last[model] = result
            print(f"round {round_index + 1}/{args.rounds}  {model}: {result['images_per_s']:.2f} images/s "
                  f"({result['images']} images)", file=sys.stderr, flush=True)

    baseline = statistics.median(speeds[peers[0]]) if peers else None
    env = environment(args.device)
    machine = f"{device_label(env, args.device)}, {os.cpu_count()} logical cores, torch {env['torch']}"
    header = (f"Machine: {machine}; batch {args.batch_size}, {args.workers} loader worker(s), "
              f"{last[models[0]]['images']} images, median of {args.rounds} interleaved rounds.")
    columns = ["model", "kind", "input", "crop_pct", "images/s (median)", "rounds", "vs " + (peers[0] if peers else "-")]
    cells = []
    rows = []
    for model in models + peers:
        median = statistics.median(speeds[model])
        ratio = median / baseline if baseline else None
        size = "x".join(str(s) for s in last[model]["input_size"][1:])
        kind = "timm" if model in peers else "zoo"
        ratio_text = f"{ratio:.2f}x" if ratio else "-"
        cells.append((model, kind, size, last[model]["crop_pct"], f"{median:.2f}",
                      ", ".join(f"{s:.1f}" for s in speeds[model]), ratio_text))
        rows.append(dict(model=model, kind=kind, images_per_s=median, rounds=speeds[model], ratio=ratio,
                         input_size=last[model]["input_size"], crop_pct=last[model]["crop_pct"]))
    table = header + "\n\n" + markdown_table(columns, cells)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "validate.md").write_text(table + "\n")
        write_json(out / "validate.json", dict(machine=machine, environment=env, rows=rows, args=vars(args)), indent=2)


if __name__ == "__main__":
    main()
