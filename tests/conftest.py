"""Shared test helpers: the parity fixtures (copied from ../shared/parity into tests/fixtures)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"


def _make_attnzoo_importable() -> None:
    """A clone that is not installed (the GPU machine's copy of the tree) maps its folders to attnzoo
    (tools/_clone_import.py); an installed attnzoo (make test's editable install) is used as it is."""
    spec = importlib.util.spec_from_file_location("_clone_import", Path(__file__).parents[1] / "tools" / "_clone_import.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_attnzoo_importable()


_make_attnzoo_importable()

# Triton decides at @triton.jit time whether to interpret, so the switch must be set before any kernels module is
# imported. Without a GPU (CI, this machine) the Triton paths run in the CPU interpreter; on a GPU machine
# (tools/gpu_check.sh) they run for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# `make test` runs one pytest-xdist worker per core: one intra-op thread each, so the workers do not fight over cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


class ParityCase:
    """One official-code fixture: ``state_dict`` (official key names), ``inputs``, ``outputs`` and the JSON ``meta``."""

    def __init__(self, name: str):
        self.name = name
        self.meta = json.loads((FIXTURES / f"{name}.json").read_text())
        tensors = load_file(str(FIXTURES / f"{name}.safetensors"))
        self.state_dict = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
        for key, value in self.meta.get("non_float_state", {}).items():
            self.state_dict[key] = torch.as_tensor(value["data"] if isinstance(value, dict) else value)
        self.inputs = {k[len("input."):]: v for k, v in tensors.items() if k.startswith("input.")}
        self.outputs = {k[len("output."):]: v for k, v in tensors.items() if k.startswith("output.")}


class _CurrentStderr:
    """Writes to ``sys.stderr`` as it is at each write: what a logging handler left on a finished test's closed
    capture is given instead (see ``_no_logging_handler_on_a_closed_stream``)."""

    closed = False

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        if not getattr(sys.stderr, "closed", False):
            sys.stderr.flush()


def _loggers_with_handlers():
    yield logging.getLogger()
    yield from (logger for logger in list(logging.Logger.manager.loggerDict.values())
                if isinstance(logger, logging.Logger) and logger.handlers)
    mm_logging = sys.modules.get("mmengine.logging")  # mmengine's loggers are not in logging's manager
    if mm_logging is not None:
        yield from list(mm_logging.MMLogger._instance_dict.values())


@pytest.fixture(autouse=True)
def _no_logging_handler_on_a_closed_stream():
    """After each test, a logging handler (mmengine's loggers included) that holds a closed stream (the test's
    capsys / capfd capture, a StringIO it redirected to) writes to the current stderr instead, so one test's logger
    never prints "--- Logging error --- ... I/O operation on closed file" into another test's stream (issue 35). The
    zoo's own mm code keeps its loggers on the standard streams (attnzoo.openmmlab.logs); this catches the rest."""
    yield
    for logger in _loggers_with_handlers():
        for handler in list(logger.handlers):
            if (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
                    and getattr(handler.stream, "closed", False)):
                with handler.lock:  # not setStream: it flushes the closed stream first
                    handler.stream = _CurrentStderr()
                    handler.__dict__.pop("flush", None)  # transformers' handler flushes the stderr of its making


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test, restored after it (tests that train or time small models in-process: two
    threads on the shared 2-core machine are slower than one). Use with ``pytest.mark.usefixtures``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def parity():
    """``parity("biformer_cls_224")`` -> ParityCase."""
    cache: dict[str, ParityCase] = {}

    def load(name: str) -> ParityCase:
        if name not in cache:
            cache[name] = ParityCase(name)
        return cache[name]

    return load


@pytest.fixture(scope="session")
def official_manifests():
    """{variant: {key: shape}} of the full-size official checkpoints."""
    return json.loads((FIXTURES / "official_manifests.json").read_text())
