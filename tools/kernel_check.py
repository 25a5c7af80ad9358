"""Compile every Triton kernel configuration the zoo launches for real GPUs, on a machine without one.

    python tools/kernel_check.py                       # models + layers, fp32/fp16/bf16, sm_80 + sm_90 (+ sm_100)
    python tools/kernel_check.py --quick               # tiny workloads (one launch per kernel and dtype), sm_90
    python tools/kernel_check.py --out docs/kernels    # where compile_report.md / .json go (make kernel-check)

How: the dispatcher is forced to the Triton path (every ``attnzoo.kernels`` module's ``choose_backend`` answers
"triton") and ``JITFunction.run`` is replaced by a recorder, so each kernel launch is bound exactly as Triton binds it
for a CUDA launch (same specialisation of ints and pointer alignment, same options) and compiled with Triton's CUDA
backend for each target -- ``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32), options=...)`` -- instead
of launched. The kernel's outputs are left as allocated, so values downstream are garbage; only shapes, dtypes and the
launch options matter here. Launchers whose options depend on the GPU (flow and SLAB: ``attnzoo.kernels.launch``) are
told the target being recorded (``compiling_for``): a workload whose launchers asked is recorded once per target, and
each configuration is compiled only for the targets whose launchers chose it. ``cuobjdump -res-usage`` (from the Triton wheel) reads registers and the stack frame (the
register spills) of each cubin; shared memory is Triton's dynamic allocation (``metadata.shared``). Occupancy is the
number of warps per SM those registers, that shared memory and num_warps allow (64 warps, 64K registers per SM on
sm_80/sm_90/sm_100; 164 KB shared per SM on sm_80, 228 KB on sm_90/sm_100).

Must run without ``TRITON_INTERPRET=1`` (the interpreter replaces the JIT; the tool clears it for its own process
before Triton is imported). Compiled kernels land in Triton's cache (``~/.triton/cache``), so a second run is fast.
"""

from __future__ import annotations

import os

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: the JIT, not the interpreter

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()  # run from a checkout without `pip install -e .` (the GPU machine's copy)

# per-SM / per-block limits (CUDA programming guide, compute capability table)
TARGETS = {
    80: dict(smem_per_sm=164 * 1024, smem_per_block=163 * 1024, max_warps=64, regs=65536, max_blocks=32),
    90: dict(smem_per_sm=228 * 1024, smem_per_block=227 * 1024, max_warps=64, regs=65536, max_blocks=32),
    100: dict(smem_per_sm=228 * 1024, smem_per_block=227 * 1024, max_warps=64, regs=65536, max_blocks=32),
}
DTYPES = ("fp32", "fp16", "bf16")


def _import_triton():
    import triton
    from triton import knobs

    if knobs.runtime.interpret:
        raise SystemExit("kernel_check: TRITON_INTERPRET=1 is set; run without it (the tool compiles, never launches)")
    return triton


def nvidia_tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def available_targets(wanted: tuple[int, ...]) -> tuple[int, ...]:
    """The targets the bundled ptxas can build (sm_100 needs ptxas-blackwell)."""
    out = []
    for cc in wanted:
        tool = nvidia_tool("ptxas-blackwell" if cc >= 100 else "ptxas")
        if os.access(tool, os.X_OK):
            out.append(cc)
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------------------
# recording launches
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Launch:
    """One distinct kernel configuration as Triton would compile it for a CUDA launch."""

    kernel: str
    op: str
    dtype: str  # the first floating pointer argument's element type
    constexprs: dict
    num_warps: int
    num_stages: int
    signature: dict
    key: str
    sources: list = field(default_factory=list)
    targets: list = field(default_factory=list)  # the compute capabilities whose launchers chose this configuration
    # what compile() needs (not serialised)
    fn: object = None
    attrs: dict = None
    options: dict = None


def _short_dtype(sig: str) -> str:
    return {"*fp32": "fp32", "*fp16": "fp16", "*bf16": "bf16"}.get(sig, sig.lstrip("*"))


class Recorder:
    """While active, every ``JITFunction`` launch is bound for a CUDA target and recorded instead of run."""

    def __init__(self, bind_capability: int = 90):
        self.launches: dict[str, Launch] = {}
        self.source = "?"
        self.bind_capability = bind_capability  # the target being recorded (launchers see it: compiling_for)
        self.touched: set = set()  # keys launched since the last reset
        self._binders: dict = {}

    def _bind(self, fn, args, kwargs):
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend
        from triton.runtime.jit import create_function_from_signature

        if (fn, self.bind_capability) not in self._binders:
            backend = make_backend(GPUTarget("cuda", self.bind_capability, 32))
            binder = create_function_from_signature(fn.signature, fn.params, backend)
            self._binders[fn, self.bind_capability] = (backend, binder)
        backend, binder = self._binders[fn, self.bind_capability]
        kwargs = dict(kwargs)
        kwargs.setdefault("debug", False)
        bound_args, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
        return options, signature, constexprs, attrs

    def run(self, fn, args, kwargs):
        options, signature, constexprs, attrs = self._bind(fn, args, kwargs)
        names = [p.name for p in fn.params]
        named_constexprs = {names[path[0]]: _plain(value) for path, value in constexprs.items() if len(path) == 1}
        # ints equal to 1 are specialised into constexprs by Triton; keep only the declared tl.constexpr parameters
        declared = {p.name for p in fn.params if p.is_constexpr}
        shown = {k: v for k, v in named_constexprs.items() if k in declared}
        pointer_types = [v for v in signature.values() if v in ("*fp32", "*fp16", "*bf16")]
        dtype = _short_dtype(pointer_types[0]) if pointer_types else "-"
        key = json.dumps(
            [fn.__name__, signature, sorted((str(k), repr(v)) for k, v in constexprs.items()),
             sorted((str(k), repr(v)) for k, v in attrs.items()), options.num_warps, options.num_stages],
            default=str,
        )  # fmt: skip
        launch = self.launches.get(key)
        if launch is None:
            launch = Launch(
                kernel=fn.__name__, op=fn.module.rsplit(".", 1)[-1], dtype=dtype, constexprs=shown,
                num_warps=options.num_warps, num_stages=options.num_stages, signature=dict(signature), key=key,
                fn=fn, attrs=attrs, options={"num_warps": options.num_warps, "num_stages": options.num_stages,
                                             "debug": False, **{"constexprs": constexprs}},
            )  # fmt: skip
            self.launches[key] = launch
        if self.source not in launch.sources:
            launch.sources.append(self.source)
        if self.bind_capability not in launch.targets:
            launch.targets.append(self.bind_capability)
        self.touched.add(key)

    @contextlib.contextmanager
    def active(self):
        from triton.runtime.jit import JITFunction

        recorder = self
        original = JITFunction.run

        def run(fn, *args, grid, warmup, **kwargs):
            recorder.run(fn, args, kwargs)
            return None

        JITFunction.run = run
        try:
            with forced_triton_path():
                yield self
        finally:
            JITFunction.run = original


def _plain(value):
    value = getattr(value, "value", value)
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


@contextlib.contextmanager
def forced_triton_path():
    """Every attnzoo.kernels module's dispatcher answers "triton" (CPU tensors included; nothing is launched)."""
    import importlib
    import pkgutil

    import attnzoo.kernels as package

    patched = []
    force = lambda *tensors: "triton"  # noqa: E731
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"attnzoo.kernels.{info.name}")
        if hasattr(module, "choose_backend"):
            patched.append((module, module.choose_backend))
            module.choose_backend = force
    try:
        yield
    finally:
        for module, original in patched:
            module.choose_backend = original


# ----------------------------------------------------------------------------------------------------------------------
# compiling
# ----------------------------------------------------------------------------------------------------------------------

_RES = re.compile(r"Function ([\w$]+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def resource_usage(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([nvidia_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    match = _RES.search(text)
    if match is None:
        raise RuntimeError(f"cuobjdump -res-usage gave no resource line:\n{text}")
    return dict(registers=int(match.group(2)), stack=int(match.group(3)), local=int(match.group(5)))


def occupancy_warps(cc: int, registers: int, shared: int, num_warps: int) -> int:
    limits = TARGETS[cc]
    if shared > limits["smem_per_block"]:
        return 0
    regs_per_warp = -(-registers * 32 // 256) * 256  # allocation unit: 256 registers per warp
    blocks_regs = (limits["regs"] // regs_per_warp) // num_warps if regs_per_warp else limits["max_blocks"]
    blocks_smem = limits["smem_per_sm"] // (shared + 1024)  # 1 KB per block reserved by the driver
    blocks_warps = limits["max_warps"] // num_warps
    return min(blocks_regs, blocks_smem, blocks_warps, limits["max_blocks"]) * num_warps


def compile_launch(launch: Launch, cc: int) -> dict:
    """Compile one configuration for one target; registers, spill bytes, shared memory, occupancy or the error."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    constexprs = launch.options["constexprs"]
    options = {k: v for k, v in launch.options.items() if k != "constexprs"}
    start = time.perf_counter()
    try:
        kernel = compile(ASTSource(launch.fn, launch.signature, constexprs, launch.attrs),
                         target=GPUTarget("cuda", cc, 32), options=options)  # fmt: skip
        usage = resource_usage(kernel.asm["cubin"])
    except Exception as error:  # noqa: BLE001 - any failure is a row of the report
        first = str(error).strip().splitlines()
        return dict(ok=False, error=f"{type(error).__name__}: {first[0] if first else ''}"[:300],
                    seconds=round(time.perf_counter() - start, 2))  # fmt: skip
    shared = int(kernel.metadata.shared)
    limit = TARGETS[cc]["smem_per_block"]
    return dict(
        ok=True, registers=usage["registers"], spill_bytes=usage["stack"] + usage["local"], shared=shared,
        shared_ok=shared <= limit,
        occupancy_warps=occupancy_warps(cc, usage["registers"], shared, launch.num_warps),
        seconds=round(time.perf_counter() - start, 2),
    )  # fmt: skip


_POOL_LAUNCHES: list = []  # what forked compile workers read (JITFunctions do not pickle)


def _compile_in_worker(job):
    index, cc = job
    return index, cc, compile_launch(_POOL_LAUNCHES[index], cc)


def compile_all(launches, targets, jobs: int = 1, log=print) -> dict:
    """{(launch.key, cc): result}, compiling in ``jobs`` forked processes (Triton's compiler and ptxas are CPU-bound)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    work = [(i, cc) for i in range(len(launches)) for cc in targets if cc in launches[i].targets]
    results = {}

    def report(index, cc, result):
        launch = launches[index]
        results[(launch.key, cc)] = result
        log(f"  [{len(results)}/{len(work)}] {launch.kernel} {launch.dtype} {_constexpr_text(launch.constexprs)} "
            f"w{launch.num_warps}/s{launch.num_stages} sm_{cc}: "
            + (_cell(result) if result["ok"] else result["error"]) + f" ({result['seconds']} s)", flush=True)  # fmt: skip

    if jobs <= 1 or len(work) <= 1:
        for index, cc in work:
            report(index, cc, compile_launch(launches[index], cc))
        return results
    _POOL_LAUNCHES[:] = launches
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        for index, cc, result in pool.map(_compile_in_worker, work):
            report(index, cc, result)
    return results


# ----------------------------------------------------------------------------------------------------------------------
# workloads: what the zoo launches
# ----------------------------------------------------------------------------------------------------------------------

CLASSIFIERS = (
    "biformer_tiny", "agent_pvt_tiny", "agent_swin_tiny", "flowformer", "slab_pvt_tiny", "slab_swin_tiny",
    "transnext_micro", "moh_transnext_small_75", "moh_transnext_base_50",
)  # fmt: skip
DETECTION_BACKBONES = ("biformer_tiny", "agent_pvt_tiny", "transnext_micro")
DETECTION_SIZE = (800, 1216)


def _autocast(device: str, dtype: str):
    import torch

    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.float16 if dtype == "fp16" else torch.bfloat16)


def _forward_backward(module, x, dtype: str) -> None:
    import torch

    with _autocast("cpu", dtype):
        out = module(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    loss = sum(o.float().sum() for o in outs if isinstance(o, torch.Tensor))
    loss.backward()


def model_workloads(names, img_size=None, batch: int = 1, features: bool = False):
    """(source, callable(dtype)) for each model: forward + backward at the model's size or ``img_size``."""
    import torch

    import attnzoo

    def make(name):
        def run(dtype):
            kwargs = {"features_only": True} if features else {}
            if img_size is not None:
                kwargs["img_size"] = img_size if not features else img_size
            model = attnzoo.create_model(name, pretrained=False, **kwargs)
            size = img_size or (224, 224)
            size = (size, size) if isinstance(size, int) else size
            x = torch.randn(batch, 3, *size, requires_grad=False)
            model.train()
            _forward_backward(model, x, dtype)

        return run

    tag = f"{img_size[0]}x{img_size[1]}" if isinstance(img_size, tuple) else "224"
    return [(f"{name}@{tag}{' features' if features else ''}", make(name)) for name in names]


def layer_workloads(quick: bool = False):
    """The attnzoo.layers modules at a YOLO neck's sizes (P3-P5 of a 640 input: 80, 40, 20; widths 128-512)."""
    import torch

    from attnzoo import layers

    sizes = ((128, 80), (256, 40), (512, 20)) if not quick else ((64, 16),)
    out = []
    for dim, hw in sizes:
        for cls in (layers.BiLevelRoutingAttention2d, layers.AgentAttention2d, layers.FlowAttention2d,
                    layers.SimplifiedLinearAttention2d):  # fmt: skip

            def run(dtype, cls=cls, dim=dim, hw=hw):
                module = cls(dim)
                x = torch.randn(1, dim, hw, hw)
                _forward_backward(module, x, dtype)

            out.append((f"layers.{cls.__name__}({dim})@{hw}x{hw}", run))

        def run_seq(dtype, dim=dim, hw=hw):
            for causal in (False, True):
                module = layers.FlowAttention1d(dim, causal=causal)
                _forward_backward(module, torch.randn(1, hw * hw, dim), dtype)

        out.append((f"layers.FlowAttention1d({dim}, causal=False|True)@{hw * hw}", run_seq))

        def run_moh(dtype, dim=dim, hw=hw):
            module = layers.MixtureOfHeadAttention(dim)
            _forward_backward(module, torch.randn(1, hw * hw, dim), dtype)

        out.append((f"layers.MixtureOfHeadAttention({dim})@{hw * hw}", run_moh))
    return out


def quick_workloads():
    """One small call of every op's public function at the zoo's head dims: each kernel once per dtype."""
    import torch

    from attnzoo.kernels import aggregated_attention as agg
    from attnzoo.kernels import bra, flow, moh, slab

    def inputs(dtype, *shape):  # the dtype the models' linear layers hand the op under autocast
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        return [torch.randn(*shape, dtype=torch_dtype, requires_grad=True) for _ in range(3)]

    def bra_run(dtype):
        q, k, v = inputs(dtype, 1, 4, 49, 64)  # 2 heads of 32 (BiFormer's head dim), 7x7-token regions
        r_idx = torch.zeros(1, 4, 2, dtype=torch.int64)
        bra.bra_attention(q, k, v, r_idx, num_heads=2, scale=32**-0.5).float().sum().backward()

    def flow_run(dtype):
        for causal in (False, True):
            q, k, v = inputs(dtype, 1, 2, 64, 64)  # Flowformer's head dim 64
            flow.flow_attention(q, k, v, causal=causal).float().sum().backward()

    def slab_run(dtype):
        q, k, v = inputs(dtype, 1, 2, 64, 32)  # SLAB-PVT/Swin's head dim 32
        slab.simplified_linear_attention(q.relu(), k.relu(), v).float().sum().backward()

    def transnext_run(dtype):
        from attnzoo import create_model

        for name in ("transnext_micro", "moh_transnext_small_75"):
            # one block per stage, stage grids 8, 4, 2, 1: cheap on the CPU, the same widths, heads and windows
            model = create_model(name, pretrained=False, img_size=32, depths=(1, 1, 1, 1))
            _forward_backward(model, torch.randn(1, 3, 32, 32), dtype)

    del agg, moh
    return [("bra_attention", bra_run), ("flow_attention", flow_run), ("simplified_linear_attention", slab_run),
            ("transnext_micro+moh_transnext_small_75@32", transnext_run)]  # fmt: skip


def record(workloads, dtypes, recorder: Recorder, targets=(90,), log=print) -> list[dict]:
    """Run each workload in each dtype with every launch recorded for ``targets[0]``; again for each further target
    only if a launcher asked which target it launches for (attnzoo.kernels.launch: flow and SLAB choose per target),
    else the configurations recorded hold for every target."""
    import torch

    from attnzoo.kernels.launch import compiling_for, target_queries

    problems = []
    for source, run in workloads:
        for dtype in dtypes:
            recorder.source = f"{source} {dtype}"
            start = time.perf_counter()
            before = len(recorder.launches)
            try:
                for i, cc in enumerate(targets):
                    recorder.bind_capability, recorder.touched = cc, set()
                    queries = target_queries()
                    with recorder.active(), compiling_for(cc):
                        torch.manual_seed(0)
                        run(dtype)
                    if i == 0 and target_queries() == queries:  # the same launches whatever the target
                        for key in recorder.touched:
                            launch = recorder.launches[key]
                            launch.targets += [t for t in targets if t not in launch.targets]
                        break
            except Exception as error:  # noqa: BLE001 - a workload that stops is reported, the others go on
                problems.append(dict(source=recorder.source, error=f"{type(error).__name__}: {error}"[:500]))
                log(f"  {recorder.source}: FAILED {type(error).__name__}: {str(error)[:200]}")
                continue
            log(f"  {recorder.source}: {len(recorder.launches) - before} new configurations "
                f"({time.perf_counter() - start:.1f} s)")  # fmt: skip
    return problems


# ----------------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------------


def _constexpr_text(constexprs: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in constexprs.items())


def rows_of(launches, results, targets) -> list[dict]:
    rows = []
    for launch in sorted(launches, key=lambda x: (x.op, x.kernel, x.dtype, x.key)):
        row = dict(kernel=launch.kernel, op=launch.op, dtype=launch.dtype, constexprs=launch.constexprs,
                   num_warps=launch.num_warps, num_stages=launch.num_stages, sources=launch.sources,
                   targets={f"sm_{cc}": results[(launch.key, cc)] for cc in targets if (launch.key, cc) in results})  # fmt: skip
        rows.append(row)
    return rows


def summary_of(rows, targets) -> dict:
    out = dict(configurations=len(rows), kernels=len({r["kernel"] for r in rows}))
    for cc in targets:
        t = f"sm_{cc}"
        results = [r["targets"][t] for r in rows if t in r["targets"]]
        out[t] = dict(
            configurations=len(results),
            compile_failures=sum(not x["ok"] for x in results),
            spilling=sum(x["ok"] and x["spill_bytes"] > 0 for x in results),
            worst_spill=max((x["spill_bytes"] for x in results if x["ok"]), default=0),
            shared_over=sum(x["ok"] and not x["shared_ok"] for x in results),
            most_shared=max((x["shared"] for x in results if x["ok"]), default=0),
            min_occupancy_warps=min((x["occupancy_warps"] for x in results if x["ok"]), default=0),
        )
    return out


def _cell(result: dict | None) -> str:
    if result is None:  # the launchers choose another configuration for this target
        return "-"
    if not result["ok"]:
        return f"**FAIL** {result['error'][:60]}"
    spill = f"**{result['spill_bytes']}**" if result["spill_bytes"] else "0"
    shared = f"{result['shared'] / 1024:.0f}K" + ("" if result["shared_ok"] else " **over**")
    return f"{result['registers']} / {spill} / {shared} / {result['occupancy_warps']}"


def markdown(rows, summary, targets, meta) -> str:
    lines = [
        "# Triton kernel compile report",
        "",
        f"Generated by `{meta['command']}` on {meta['machine']} ({meta['date']}; triton {meta['triton']}, torch "
        f"{meta['torch']}). Every kernel launch of the workloads below, with the launch options the zoo's launchers "
        "pick on a GPU, compiled with Triton's CUDA backend (no GPU needed). Cells: registers / spill bytes (stack "
        "frame) / shared memory / occupancy in warps per SM (of 64); `-`: on that target the launchers choose "
        "another configuration (a row of its own).",
        "",
        "Workloads: " + meta["workloads"],
        "",
        "| target | configurations | compile failures | spilling | worst spill | over shared limit | most shared | "
        "lowest occupancy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cc in targets:
        s = summary[f"sm_{cc}"]
        lines.append(f"| sm_{cc} | {s['configurations']} | {s['compile_failures']} | {s['spilling']} | "
                     f"{s['worst_spill']} B | {s['shared_over']} | {s['most_shared'] / 1024:.0f} KB | "
                     f"{s['min_occupancy_warps']} warps |")  # fmt: skip
    lines += ["", "| kernel | dtype | constexprs | warps / stages | " + " | ".join(f"sm_{cc}" for cc in targets) + " |",
              "|---|---|---|---|" + "---|" * len(targets)]  # fmt: skip
    for row in rows:
        cells = " | ".join(_cell(row["targets"].get(f"sm_{cc}")) for cc in targets)
        lines.append(f"| `{row['kernel']}` | {row['dtype']} | {_constexpr_text(row['constexprs'])} | "
                     f"{row['num_warps']} / {row['num_stages']} | {cells} |")  # fmt: skip
    if meta.get("problems"):
        lines += ["", "Workloads that stopped:", ""]
        lines += [f"- {p['source']}: `{p['error']}`" for p in meta["problems"]]
    return "\n".join(lines) + "\n"


def check(summary, targets) -> list[str]:
    """The failures that make the tool exit 1."""
    bad = []
    for cc in targets:
        s = summary[f"sm_{cc}"]
        for what in ("compile_failures", "spilling", "shared_over"):
            if s[what]:
                bad.append(f"sm_{cc}: {s[what]} {what.replace('_', ' ')}")
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny workloads: each kernel once per dtype (CI)")
    parser.add_argument("--targets", default="80,90,100", help="compute capabilities (default 80,90,100)")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--models", default=",".join(CLASSIFIERS), help="classification models at 224")
    parser.add_argument("--detection", default=",".join(DETECTION_BACKBONES),
                        help=f"backbones run at {DETECTION_SIZE[0]}x{DETECTION_SIZE[1]} (features); '' for none")
    parser.add_argument("--no-layers", action="store_true", help="skip the attnzoo.layers modules")
    parser.add_argument("--out", type=Path, default=None, help="write compile_report.md and .json here")
    parser.add_argument("--name", default="compile_report", help="file name stem of the report")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles in parallel (processes)")
    parser.add_argument("--list", action="store_true", help="only record and list the configurations; compile none")
    args = parser.parse_args(argv)

    triton = _import_triton()
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    targets = available_targets(tuple(int(x) for x in args.targets.split(",") if x))
    dtypes = tuple(x for x in args.dtypes.split(",") if x)
    if args.quick:
        workloads = quick_workloads()
        described = "each op's public function at small sizes (BRA 7x7 regions, head dim 32; flow causal and not; SLAB), " \
                    "transnext_micro and moh_transnext_small_75 (one block per stage) at 32x32"
    else:
        models = [m for m in args.models.split(",") if m]
        detection = [m for m in args.detection.split(",") if m]
        workloads = model_workloads(models)
        workloads += model_workloads(detection, img_size=DETECTION_SIZE, features=True)
        if not args.no_layers:
            workloads += layer_workloads()
        described = (f"{', '.join(models)} at 224 (batch 1, train mode, forward + backward); "
                     f"{', '.join(detection) or 'none'} as features_only backbones at "
                     f"{DETECTION_SIZE[0]}x{DETECTION_SIZE[1]} (batch 1); "
                     + ("" if args.no_layers else "attnzoo.layers at YOLO neck sizes (128 ch @ 80x80, 256 @ 40x40, "
                        "512 @ 20x20); ")
                     + f"dtypes {', '.join(dtypes)} (fp16/bf16 as torch.autocast)")  # fmt: skip

    print(f"recording launches: {len(workloads)} workloads x {len(dtypes)} dtypes", flush=True)
    recorder = Recorder()
    problems = record(workloads, dtypes, recorder, targets)
    launches = list(recorder.launches.values())
    if args.quick:  # one configuration per kernel, dtype and target: the first the launchers chose
        first = {}
        for launch in launches:
            for cc in launch.targets:
                first.setdefault((launch.kernel, launch.dtype, cc), launch)
        chosen = {}
        for (_, _, cc), launch in first.items():
            chosen.setdefault(launch.key, (launch, []))[1].append(cc)
        for launch, ccs in chosen.values():
            launch.targets = sorted(ccs)
        launches = [launch for launch, _ in chosen.values()]
    print(f"{len(launches)} distinct configurations; compiling for {', '.join(f'sm_{t}' for t in targets)}", flush=True)
    if args.list:
        for launch in sorted(launches, key=lambda x: (x.op, x.kernel, x.dtype, x.key)):
            print(f"  {launch.kernel} {launch.dtype} {_constexpr_text(launch.constexprs)} "
                  f"w{launch.num_warps}/s{launch.num_stages} [{','.join(f'sm_{t}' for t in launch.targets)}] "
                  f"<- {'; '.join(launch.sources[:3])}")
        return 1 if problems else 0
    results = compile_all(launches, targets, args.jobs)
    rows = rows_of(launches, results, targets)
    summary = summary_of(rows, targets)
    meta = dict(
        command="python tools/kernel_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        machine=f"{os.cpu_count()}-core CPU, no GPU", date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        triton=triton.__version__, torch=torch.__version__, workloads=described, problems=problems,
    )  # fmt: skip
    print(json.dumps(summary, indent=1))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text(markdown(rows, summary, targets, meta))
        (args.out / f"{args.name}.json").write_text(json.dumps(dict(meta=meta, summary=summary, rows=rows), indent=1))
        print(f"wrote {args.out / (args.name + '.md')} and .json")
    bad = check(summary, targets) + [f"workload stopped: {p['source']}" for p in problems]
    for line in bad:
        print("FAIL", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
