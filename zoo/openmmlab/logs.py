"""mmengine's loggers write to the standard stream of the moment they write, not of the moment they were made.

An ``MMLogger`` (mmengine's default ``"mmengine"`` instance, made by the first ``print_log`` anywhere, e.g. a registry
that imports its modules; a Runner's own instance) gives its console handler ``sys.stdout`` *as it is at creation*
and keeps it for the life of the process. In-process callers swap ``sys.stdout`` / ``sys.stderr`` for a while (a
verb's ``redirect_stdout``, the X-ray demo's step log, pytest's per-test capture) and close what they swapped in, so
a logger made meanwhile later writes into a closed file: every message becomes a ``--- Logging error --- ...
ValueError: I/O operation on closed file`` block on whatever stderr is current then (another test's, another step's).

The rule: every console handler of an mmengine logger holds a :class:`StandardStream`, which looks ``sys.stdout``
(or ``sys.stderr``) up at each write. :func:`follow_standard_streams` applies it to the loggers that exist;
``import attnzoo.openmmlab`` makes mmengine's default instance that way before mmengine would make it lazily, and
calls it; the zoo's in-process mm code calls it again where it may have made a logger (the mm tools' Runner,
``attnzoo.tasks.xray``'s steps). Only handlers bound to a standard stream (the current one or the interpreter's
own) or to a closed one are changed; a handler on a log file, or on a stream a caller set on purpose, is left.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["StandardStream", "follow_standard_streams", "make_default_logger"]


class StandardStream:
    """A text stream that writes to ``sys.<name>`` (``"stdout"`` or ``"stderr"``) as it is at each call."""

    def __init__(self, name: str):
        if name not in ("stdout", "stderr"):
            raise ValueError(f"StandardStream: 'stdout' or 'stderr', not {name!r}")
        self.name = name

    @property
    def _stream(self):
        return getattr(sys, self.name)

    def write(self, text: str) -> int:
        stream = self._stream
        return 0 if stream is None else stream.write(text)

    def flush(self) -> None:
        stream = self._stream
        if stream is not None and not getattr(stream, "closed", False):
            stream.flush()

    @property
    def closed(self) -> bool:
        return False

    def isatty(self) -> bool:
        stream = self._stream
        return bool(stream is not None and not getattr(stream, "closed", False) and stream.isatty())

    def __repr__(self) -> str:
        return f"<StandardStream sys.{self.name}>"


def _following(stream) -> StandardStream | None:
    """The StandardStream a handler holding ``stream`` should hold instead, or None to leave it."""
    if isinstance(stream, StandardStream):
        return None
    if stream is sys.stderr or stream is sys.__stderr__:
        return StandardStream("stderr")  # first: inside redirect_stdout(sys.stderr) both names are this stream
    if stream is sys.stdout or stream is sys.__stdout__:
        return StandardStream("stdout")
    if getattr(stream, "closed", False):
        return StandardStream("stderr")  # its owner is gone; diagnostics belong on stderr
    return None


def point(handler: logging.StreamHandler, stream) -> None:
    """``handler`` writes to ``stream`` from now on. Not ``setStream``: that flushes the old stream first, which may
    be closed by now."""
    with handler.lock:
        handler.stream = stream


def follow_standard_streams() -> int:
    """Every console handler of every mmengine logger that holds a standard stream or a closed one follows the
    standard stream from now on (see the module's docstring); returns how many were changed. Nothing when mmengine
    was never imported."""
    module = sys.modules.get("mmengine.logging")
    if module is None:
        return 0
    changed = 0
    for logger in list(module.MMLogger._instance_dict.values()):
        for handler in list(logger.handlers):
            if type(handler) is not logging.StreamHandler:  # FileHandler & co. are the run's log files
                continue
            stream = _following(handler.stream)
            if stream is not None:
                point(handler, stream)
                changed += 1
    return changed


def make_default_logger() -> None:
    """mmengine's default ``"mmengine"`` logger, made now (mmengine would make it at its first ``print_log``, bound
    to whatever ``sys.stdout`` is then) and following the standard streams."""
    from mmengine.logging import MMLogger

    if not MMLogger._instance_dict:  # as mmengine's get_current_instance: only when no logger exists yet
        MMLogger.get_instance("mmengine")
    follow_standard_streams()
