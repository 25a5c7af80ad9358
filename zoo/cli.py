"""The ``zoo`` command. Each verb lives in its own module under ``zoo/commands`` (see its ``__init__``).

User mistakes end with one line on stderr and exit code 2, never a traceback: every error type the zoo raises for
them subclasses ``attnzoo.errors.ZooError`` (unknown model, bad card, checkpoint that does not fit, dataset or run
folder, bad flag value), so a new verb with a new error type needs nothing here; a missing file
(``FileNotFoundError``) is mapped too. Bugs still raise. A reader that closes the pipe early (``zoo card x | head``)
ends the command quietly. Ctrl-C ends it with one line, ``zoo: interrupted`` plus what the verb says about where it
stopped (``zoo train``: the epoch its run folder holds and how to continue), and exit code 130 (128 + SIGINT).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .commands import VERB_MODULES
from .errors import EXIT_USER_ERROR, UserError, ZooError
from .tasks.folders import printable

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "UserError", "build_parser", "main"]

EXIT_INTERRUPTED = 130  # as shells report a command ended by SIGINT (128 + 2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="attnzoo: models, model cards and safe checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in VERB_MODULES:
        importlib.import_module(f".commands.{name}", __package__).register(commands)
    return parser


def _quiet_broken_pipe() -> int:
    # The reader went away (e.g. `| head`): point stdout at /dev/null so the interpreter's final flush cannot raise
    # again, and exit like other Unix tools do when SIGPIPE ends them (128 + 13).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as typed, for records such as a training run's model card
    try:
        code = args.run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (ZooError, FileNotFoundError) as err:
        print(f"zoo: error: {printable(str(err))}", file=sys.stderr)  # names in it escaped: one line, no colours
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        # Ctrl-C: one line (what the verb says about where it stopped, e.g. a run folder's next step), exit 130.
        fresh_line = "\n" if sys.stderr.isatty() else ""  # off the progress bar or the ^C the terminal echoed
        print(f"{fresh_line}zoo: interrupted{f': {printable(str(err))}' if str(err) else ''}", file=sys.stderr,
              flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
