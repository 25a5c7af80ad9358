"""Issue 35 (round 2): one test's logger never writes into another test's closed capture.

tests/conftest.py's autouse ``_no_logging_handler_on_a_closed_stream`` gives every handler left on a closed stream
the current stderr after each test. The two tests below run in this order in one process (pytest keeps a file's
order; ``--dist loadfile`` keeps a file on one worker): the first leaves a plain logging logger (its handler
flushing as transformers' default handler does) and an mmengine logger on its own capsys streams, which pytest closes
when it ends; the second logs through both. Without the fixture the second test's stderr holds "--- Logging error ---
... I/O operation on closed file" blocks.
"""

from __future__ import annotations

import logging
import sys

import pytest

LOGGER = "attnzoo.tests.closed_streams"


def _mm_logger():
    mm_logging = pytest.importorskip("mmengine.logging")
    return mm_logging.MMLogger.get_instance(LOGGER)


def test_1_a_test_leaves_loggers_on_its_capture(capsys):
    logger = logging.getLogger(LOGGER)
    logger.propagate = False
    handler = logging.StreamHandler(sys.stderr)  # capsys's stderr, closed when this test ends
    handler.flush = sys.stderr.flush  # as transformers' default handler does
    logger.addHandler(handler)
    mm_logger = _mm_logger()
    for handler in mm_logger.handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stdout  # as if mmengine made it now: capsys's stdout
    logger.warning("first")
    mm_logger.warning("first")
    captured = capsys.readouterr()
    assert "first" in captured.err and "first" in captured.out


def test_2_a_later_test_sees_no_logging_error(capsys):
    logger, mm_logger = logging.getLogger(LOGGER), _mm_logger()
    try:
        logger.warning("second")
        mm_logger.warning("second")
        err = capsys.readouterr().err
        assert "Logging error" not in err and "closed file" not in err, err
        assert err.count("second") == 2  # both still log, to the stderr of now
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logging.Logger.manager.loggerDict.pop(LOGGER, None)
        type(mm_logger)._instance_dict.pop(LOGGER, None)
