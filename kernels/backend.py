"""Which implementation an op runs: the Triton kernel or the plain-torch reference.

Rule: CUDA tensors and an importable Triton -> "triton"; anything else -> "reference".
``ZOO_KERNELS=reference|triton`` forces a path (tests force "triton" on the CPU together with
``TRITON_INTERPRET=1``, which runs the kernels in Triton's interpreter).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch._decomp

BACKENDS = ("reference", "triton")


# Decided once at import (a plain constant, so torch.compile traces through choose_backend without guards on a cache).
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_INSTALLED


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def forced_backend() -> str | None:
    value = os.environ.get("ZOO_KERNELS", "").strip().lower()
    if not value:
        return None
    if value not in BACKENDS:
        raise ValueError(f"ZOO_KERNELS={value!r} is not one of {BACKENDS}; unset it or pick one of those")
    return value


def choose_backend(*tensors: torch.Tensor) -> str:
    forced = forced_backend()
    if forced == "triton":
        if not triton_available():
            raise RuntimeError("ZOO_KERNELS=triton but triton cannot be imported; install triton or unset ZOO_KERNELS")
        on_cuda = all(t.is_cuda for t in tensors)
        if not on_cuda and not interpreting():
            raise RuntimeError(
                "ZOO_KERNELS=triton with CPU tensors needs TRITON_INTERPRET=1 (set before importing triton); "
                "or move the tensors to CUDA"
            )
        return "triton"
    if forced == "reference":
        return "reference"
    if tensors and all(t.is_cuda for t in tensors) and triton_available():
        return "triton"
    return "reference"


def cast_for_autocast(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Under ``torch.autocast``, the float32/16 inputs of an op in the autocast dtype (as autocast casts a matmul's
    inputs), else the inputs unchanged. The ops take one dtype, and under autocast a module hands them linear
    outputs in low precision next to float32 parameters (biases, temperatures)."""
    first = next(t for t in tensors if t is not None)
    device = first.device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    low = (torch.float32, torch.float16, torch.bfloat16)
    return tuple(t.to(dtype) if t is not None and t.dtype in low else t for t in tensors)


# ----------------------------------------------------------------------------------------------------------------------
# The ops: every attention op of this package is a torch.library op in the ``attnzoo`` namespace, the single entry point
# on every device (docs/ARCHITECTURE.md, "Kernels"). ``kernel_op`` defines the pair an op needs:
#
#   attnzoo::<name>_forward(<args>) -> (Tensor out, Tensor[] saved)
#   attnzoo::<name>_backward(Tensor grad_out, <args>, Tensor out, Tensor[] saved) -> Tensor[]  (one per <args> tensor)
#
# Their kernels pick the path with the op file's own predicate (``choose_backend``: the Triton path for CUDA tensors,
# the non-Triton path for every other device, ``ZOO_KERNELS`` forcing either), so torch.compile and torch.export see
# the same ``attnzoo::`` nodes whatever the device. ``saved`` holds what the chosen path keeps for its backward beyond
# the inputs and the output (the kernels' fp32 statistics); its length and shapes depend on the path, and the fake
# (meta) implementation answers with the same path's shapes. Autograd is registered on the forward op
# (``register_autograd``); the backward op is opaque too. ONNX: the forward op decomposes into functional plain torch
# (the reference; ``torch._decomp`` table, which ``torch.onnx.export(dynamo=True)`` applies), so exported files hold
# standard ONNX ops only.
# ----------------------------------------------------------------------------------------------------------------------

LIBRARY = "attnzoo"

Forward = Callable[..., tuple[torch.Tensor, list[torch.Tensor]]]
Backward = Callable[..., tuple[torch.Tensor | None, ...]]


@dataclass(frozen=True)
class KernelPath:
    """One implementation of an op: ``forward(*args) -> (out, saved)`` and ``backward(grad_out, *args, out, saved)``
    -> one gradient (or None) per argument; ``fake_saved(*args)`` gives ``saved``'s shapes for the fake kernel."""

    forward: Forward
    backward: Backward
    fake_saved: Callable[..., list[torch.Tensor]]


@contextlib.contextmanager
def autograd_inside_op():
    """Autograd recording inside an op's kernel: the custom-op machinery runs kernels below the autograd dispatch keys
    (and with grad mode off in a backward), so a kernel that differentiates a plain-torch path puts the keys back."""
    include = torch._C._dispatch_tls_local_include_set()
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.ADInplaceOrView):
        exclude = exclude.remove(key)
    with torch._C._ForceDispatchKeyGuard(include, exclude), torch.enable_grad():
        yield


def recompute_path(function: Callable[..., torch.Tensor]) -> KernelPath:
    """A plain-torch (differentiable) implementation as a KernelPath: the forward keeps nothing, the backward recomputes the
    forward under autograd and differentiates it (what an opaque op costs a path without its own backward)."""

    def forward(*args):
        return function(*args), []

    def backward(grad_out, *rest):
        args = rest[:-2]
        leaves = [a.detach().requires_grad_() if _differentiable(a) else a for a in args]
        wanted = [leaf for leaf in leaves if _differentiable(leaf)]
        with autograd_inside_op():
            out = function(*leaves)
            grads = torch.autograd.grad(out, wanted, grad_out, allow_unused=True)
        found = iter(grads)
        return tuple(next(found) if _differentiable(leaf) else None for leaf in leaves)

    return KernelPath(forward, backward, lambda *args: [])


class _RecordingContext:
    """Stands in for an autograd.Function's ``ctx`` so the Function's forward / backward (the Triton launchers) run as
    plain functions inside the ops."""

    def __init__(self, needs_input_grad=(), saved_tensors=(), attributes=None):
        self.needs_input_grad = tuple(needs_input_grad)
        self.saved_tensors = tuple(saved_tensors)
        self.__dict__.update(attributes or {})

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def _signature(args) -> tuple:
    """What a Function's ctx attributes may depend on: shapes, dtypes, devices, the other arguments and the mode."""
    described = tuple((tuple(a.shape), a.dtype, a.device.type) if isinstance(a, torch.Tensor) else a for a in args)
    return (*described, interpreting())


def function_path(function: type[torch.autograd.Function], fake_saved: Callable[..., list[torch.Tensor]]) -> KernelPath:
    """A KernelPath from an autograd.Function whose ``forward(ctx, *args)`` / ``backward(ctx, grad_out)`` launch the kernels:
    ``saved`` carries the tensors the forward saved that are neither arguments nor the output; ctx's other attributes
    (tile sizes, geometry: functions of the arguments' shapes and the arguments) are kept per signature, so the
    launchers stay as they are written."""
    layouts: dict[tuple, tuple] = {}

    def forward(*args):
        ctx = _RecordingContext(needs_input_grad=[_differentiable(a) for a in args])
        out = function.forward(ctx, *args)
        layout, saved = [], []
        for tensor in ctx.saved_tensors:
            if tensor is None:
                layout.append(("none",))
            elif tensor is out:
                layout.append(("out",))
            elif any(tensor is a for a in args):
                layout.append(("arg", next(i for i, a in enumerate(args) if tensor is a)))
            else:
                layout.append(("saved", len(saved)))
                saved.append(tensor)
        attributes = {k: v for k, v in vars(ctx).items() if k not in ("needs_input_grad", "saved_tensors")}
        for key, value in attributes.items():
            if not isinstance(value, (bool, int, float, str, type(None), tuple)) or (
                isinstance(value, tuple) and not all(isinstance(x, (bool, int, float, str)) for x in value)
            ):  # kept per signature, so only values the shapes and arguments decide may live on ctx
                raise TypeError(f"{function.__name__}.forward keeps ctx.{key} = {type(value).__name__}: tensors and "
                                "data-dependent values must go through save_for_backward")  # fmt: skip
        layouts[_signature(args)] = (tuple(layout), attributes)
        return out, saved

    def backward(grad_out, *rest):
        *args, out, saved = rest
        layout, attributes = layouts[_signature(args)]
        tensors = []
        for entry in layout:
            kind = entry[0]
            tensors.append(None if kind == "none" else out if kind == "out" else
                           args[entry[1]] if kind == "arg" else saved[entry[1]])  # fmt: skip
        ctx = _RecordingContext([_differentiable(a) for a in args], tensors, attributes)
        grads = function.backward(ctx, grad_out)
        return tuple(grads[: len(args)])

    return KernelPath(forward, backward, fake_saved)


def _differentiable(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype.is_floating_point


def kernel_op(
    name: str,
    arguments: str,
    *,
    uses_triton: Callable[..., bool],
    triton_path: KernelPath | None,
    other: KernelPath,
    fake_out: Callable[..., torch.Tensor],
    decomposition: Callable[..., torch.Tensor] | None = None,
):
    """Define ``attnzoo::<name>_forward`` / ``attnzoo::<name>_backward`` (see above) and return the function that calls
    the forward op (its ``.op``), or its decomposition under ``torch.jit.trace``.

    ``arguments``: the schema's argument list, e.g. ``"(Tensor q, Tensor k, Tensor v, float eps)"``;
    ``uses_triton(*args)``: the op file's choice of path (works on fake tensors: shapes, dtypes, devices only);
    ``triton_path`` / ``other``: the two paths; ``fake_out(*args)``: an empty output of the right shape, dtype and strides;
    ``decomposition(*args)``: functional plain torch ops computing the output (default: ``other``'s forward), for
    ONNX (``run_decompositions`` refuses in-place writes into new tensors).
    """
    qualified = f"{LIBRARY}::{name}"

    def pick(args) -> KernelPath:
        return triton_path if triton_path is not None and uses_triton(*args) else other

    def forward_kernel(*args):
        out, saved = pick(args).forward(*args)
        return out, list(saved)

    forward_op = torch.library.custom_op(
        f"{qualified}_forward", forward_kernel, mutates_args=(), schema=f"{arguments} -> (Tensor, Tensor[])"
    )

    @forward_op.register_fake
    def fake(*args):
        return fake_out(*args), list(pick(args).fake_saved(*args))

    backward_arguments = f"(Tensor grad_out, {arguments[1:-1]}, Tensor out, Tensor[] saved)"

    def backward_kernel(grad_out, *rest):
        args = rest[:-2]
        grads = pick(args).backward(grad_out, *rest)
        result = []
        for arg, grad in zip(args, grads):
            if not _differentiable(arg):
                continue
            like = torch.empty_like(arg)  # the fake kernel's layout (the argument's strides where dense)
            if grad is None:
                grad = like.zero_()
            elif grad.stride() != like.stride() or grad.dtype != like.dtype:
                grad = like.copy_(grad)
            result.append(grad)
        return result

    backward_op = torch.library.custom_op(
        f"{qualified}_backward", backward_kernel, mutates_args=(), schema=f"{backward_arguments} -> Tensor[]"
    )

    @backward_op.register_fake
    def _(grad_out, *rest):
        return [torch.empty_like(arg) for arg in rest[:-2] if _differentiable(arg)]

    def setup_context(ctx, inputs, output):
        out, saved = output
        tensors = [a if isinstance(a, torch.Tensor) else None for a in inputs]
        ctx.save_for_backward(*[t for t in tensors if t is not None], out, *saved)
        ctx.arguments = [None if isinstance(a, torch.Tensor) else a for a in inputs]
        ctx.is_tensor = [isinstance(a, torch.Tensor) for a in inputs]

    def backward(ctx, grad_out, _grad_saved):
        stored = list(ctx.saved_tensors)
        n_tensors = sum(ctx.is_tensor)
        tensors, out, saved = stored[:n_tensors], stored[n_tensors], stored[n_tensors + 1 :]
        found = iter(tensors)
        args = [next(found) if is_tensor else value for is_tensor, value in zip(ctx.is_tensor, ctx.arguments)]
        grads = iter(backward_op(grad_out, *args, out, saved))
        return tuple(next(grads) if _differentiable(arg) else None for arg in args)

    forward_op.register_autograd(backward, setup_context=setup_context)

    def decompose(*args):
        plain = decomposition if decomposition is not None else (lambda *a: other.forward(*a)[0])
        # saved: empty tensors of the path's shapes (an exported graph may index them; nothing reads their values)
        return plain(*args), list(pick(args).fake_saved(*args))

    overload = getattr(getattr(torch.ops, LIBRARY), f"{name}_forward").default
    torch._decomp.register_decomposition(overload)(decompose)
    # FakeTensor prefers a decomposition-table entry over the fake kernel when shapes are symbolic, unless the op has a
    # meta entry: the fake kernel is that entry, so dynamic-shape tracing (torch.compile(dynamic=True)) keeps the op.
    torch._decomp.register_decomposition(overload, type="meta")(fake)

    def call(*args):
        # torch.jit.trace (the TorchScript ONNX exporter, which Ultralytics' export uses) cannot record a custom op
        # ONNX has no translation for: it records the decomposition's plain torch ops instead. torch.compile and
        # torch.export see the op itself (dynamo folds is_tracing() to False).
        if torch.jit.is_tracing():
            return decompose(*args)
        return forward_op(*args)

    call.op = forward_op
    return call
