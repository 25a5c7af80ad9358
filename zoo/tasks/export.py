"""ONNX export and torch.compile checks for any registered model.

``export_onnx`` tries the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) first and falls back to the
TorchScript exporter when dynamo cannot trace a model; it then runs the file in onnxruntime on the same input and
reports the largest absolute difference from eager PyTorch, so an export is never silently wrong.

``export_model`` is ``zoo export NAME``: the model is built by ``attnzoo.create_model(name)`` (a carded model with its
card's ``model_kwargs``, e.g. FocalNet-L/XL/H ``normalize_modulator``, which has no parameters: a checkpoint would load
strictly into a model built without it, and the export would compute another function), then ``--checkpoint`` is
loaded with ``attnzoo.load_checkpoint``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..outputs import output_file, writing

log = logging.getLogger(__name__)


@dataclass
class OnnxExport:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    max_abs_diff: float | None  # onnxruntime vs eager on the export input; None if onnxruntime is missing


def export_model(
    name: str,
    output: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    input_size: tuple[int, ...] | None = None,
    opset: int = 18,
    exporter: str = "auto",
    model_kwargs: dict | None = None,
) -> OnnxExport:
    """Build zoo model ``name`` as its card says (with ``model_kwargs``), load ``checkpoint`` (path or card name) and
    export it to ONNX. An ``input_size`` other than the model's builds the model at that size where its constructor
    takes ``img_size`` (position embeddings, windows; the checkpoint is resampled by the family filter on load), unless
    ``model_kwargs`` sets ``img_size`` itself; other models are only traced at that size."""
    from .. import create_model, load_checkpoint
    from ..models.builder import img_size_kwargs

    # the one output-path rule (attnzoo.outputs), before a model is built
    output = output_file(output or f"{name}.onnx", "--output", inputs=[checkpoint] if checkpoint else [])
    kwargs = dict(model_kwargs or {})
    if input_size is not None and "img_size" not in kwargs:
        height, width = input_size[-2:]
        kwargs.update(img_size_kwargs(name, height if height == width else (height, width), **kwargs))
    model = create_model(name, pretrained=False, **kwargs)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return export_onnx(model, output, input_size=input_size, opset=opset, exporter=exporter)


def _example_input(model: torch.nn.Module, input_size: tuple[int, ...] | None, batch_size: int) -> torch.Tensor:
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        input_size = tuple(cfg.get("input_size", (3, 224, 224)))
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch_size, *input_size), generator=generator)


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, ...] | None = None,
    batch_size: int = 1,
    opset: int = 18,
    exporter: str = "auto",
    check: bool = True,
) -> OnnxExport:
    """Export ``model`` (eval mode) to ONNX at ``path`` and check it against eager with onnxruntime.

    exporter: "dynamo", "torchscript" or "auto" (dynamo, then TorchScript if dynamo fails; the reason is logged).
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter={exporter!r}: use 'auto', 'dynamo' or 'torchscript'")
    path = output_file(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = _example_input(model, input_size, batch_size)
    used = None
    if exporter in ("auto", "dynamo"):
        try:
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, verbose=False)
        except Exception as err:  # the dynamo exporter raises many error types
            if exporter == "dynamo":
                raise
            log.warning("dynamo ONNX export failed (%s: %s); falling back to the TorchScript exporter",
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        else:
            with writing(path):  # a full disk is the file system's answer, not a reason to try another exporter
                program.save(str(path))
            used = "dynamo"
    if used is None:
        with writing(path):
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"])
        used = "torchscript"
    diff = _onnxruntime_max_abs_diff(model, path, x) if check else None
    return OnnxExport(path=path, exporter=used, max_abs_diff=diff)


def _onnxruntime_max_abs_diff(model: torch.nn.Module, path: Path, x: torch.Tensor) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("onnxruntime is not installed: the exported model was not checked")
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})[:1]
    with torch.no_grad():
        eager = model(x)
    return float((torch.from_numpy(onnx_out) - eager).abs().max())


def compile_check(model: torch.nn.Module, x: torch.Tensor, *, backend: str = "aot_eager") -> float:
    """Compile ``model`` with ``fullgraph=True`` (any graph break is an error) and return max |compiled - eager|.

    The default backend "aot_eager" traces forward through dynamo + AOTAutograd (where graph breaks and custom-op
    problems show up) without inductor's C++ code generation, which takes minutes per model on a small CPU; pass
    backend="inductor" to run the full compiler.
    """
    torch._dynamo.reset()
    model = model.eval()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    with torch.no_grad():
        return float((compiled(x) - model(x)).abs().max())
