"""Issue 35 (round 2, what was left): mmengine's loggers never keep a caller's closed stream.

The flake: mmengine's default logger was made by the first ``print_log`` in the worker (``zoo convert --model <X-ray
card>`` builds the card's detector; mmengine's registry logs while importing its modules), bound to the ``sys.stdout``
of that moment: the test's capture, closed when the test ended. A later test's mm code then printed ~100 ``---
Logging error --- ... ValueError: I/O operation on closed file`` blocks into its own stderr. Now the loggers' console
handlers follow the standard streams (``attnzoo.openmmlab.logs``).
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

from attnzoo.openmmlab.logs import StandardStream, follow_standard_streams

# A fresh interpreter, as a pytest-xdist worker is before its first mm test: the verb runs while stdout is a capture
# (as pytest's capsys), the capture is closed (the test ends), then mmengine logs (a later test's mm code).
FIRST_MM_CALL_UNDER_A_CAPTURE = textwrap.dedent("""
    import contextlib, io, sys
    import timm
    from attnzoo.cli import main
    from attnzoo.weights import save_safetensors

    src, dst = sys.argv[1], sys.argv[2]
    save_safetensors(timm.create_model("test_convnext").state_dict(), src)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["convert", src, dst, "--model", "cascade_mask_rcnn_r101_pidray"])
    out.close()
    err.close()
    assert code == 2, code
    from mmengine.logging import print_log
    print_log("a later message", logger="current")
""")


def test_the_first_mm_call_under_a_capture_leaves_no_logger_on_it(tmp_path):
    result = subprocess.run([sys.executable, "-c", FIRST_MM_CALL_UNDER_A_CAPTURE, str(tmp_path / "run.safetensors"),
                             str(tmp_path / "out.safetensors")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Logging error" not in result.stderr and "closed file" not in result.stderr, result.stderr[-3000:]
    assert "a later message" in result.stdout  # mmengine's choice, stdout, as it is when the message is written


def _mm_logger(name: str, stream):
    from mmengine.logging import MMLogger

    logger = MMLogger.get_instance(name)
    handler = next(h for h in logger.handlers if type(h) is logging.StreamHandler)
    handler.stream = stream  # as if made while sys.stdout was ``stream``
    return logger, handler


def test_console_handlers_follow_the_standard_streams_and_log_files_are_left(tmp_path, monkeypatch, capsys):
    from mmengine.logging import MMLogger

    monkeypatch.setattr(MMLogger, "_instance_dict", type(MMLogger._instance_dict)())  # only this test's loggers
    closed = io.StringIO()
    closed.close()
    own = io.StringIO()  # a stream a caller set on purpose (the X-ray demo's step log): not ours to move
    _, on_closed = _mm_logger("on_closed", closed)
    _, on_stdout = _mm_logger("on_stdout", sys.stdout)
    _, on_stderr = _mm_logger("on_stderr", sys.stderr)
    _, on_own = _mm_logger("on_own", own)
    with_file = MMLogger.get_instance("with_file", log_file=str(tmp_path / "run.log"))
    file_handler = next(h for h in with_file.handlers if isinstance(h, logging.FileHandler))

    assert follow_standard_streams() == 4  # on_closed, on_stdout, on_stderr, with_file's console handler
    assert [on_closed.stream.name, on_stdout.stream.name, on_stderr.stream.name] == ["stderr", "stdout", "stderr"]
    assert on_own.stream is own and isinstance(file_handler.stream, io.TextIOWrapper)
    assert follow_standard_streams() == 0  # once is enough

    MMLogger.get_instance("on_closed").info("to stderr")
    MMLogger.get_instance("on_stdout").info("to stdout")
    captured = capsys.readouterr()
    assert "to stderr" in captured.err and "to stdout" in captured.out and "Logging error" not in captured.err
    file_handler.close()


def test_a_standard_stream_writes_where_sys_stdout_is_now(capsys):
    stream = StandardStream("stdout")
    later = io.StringIO()
    stream.write("now\n")
    sys.stdout, previous = later, sys.stdout
    try:
        stream.write("later\n")
        stream.flush()
    finally:
        sys.stdout = previous
    assert capsys.readouterr().out == "now\n" and later.getvalue() == "later\n" and not stream.closed
