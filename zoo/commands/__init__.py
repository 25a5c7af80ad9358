"""The verbs of the ``zoo`` command, one module per verb.

Each module defines ``register(subparsers)``: it adds its sub-parser and sets ``run=<function(args) -> exit code>``.
``attnzoo.cli`` builds the parser from ``VERB_MODULES`` in that order (the order of ``zoo --help``). A new verb is a new
module here plus one entry in ``VERB_MODULES``.

Conventions every verb keeps (docs/ARCHITECTURE.md): a verb only parses arguments and prints; the work is library
code in ``attnzoo.tasks`` (or ``attnzoo.models``, ``attnzoo.weights``, ``attnzoo.cards``). The same flag names everywhere (``--data``,
``--out``, ``--device``, ``--batch-size``, ``--img-size``, ``--checkpoint``); a user mistake raises a
``attnzoo.errors.ZooError`` (``UserError`` for a bad flag) and ends as one line on stderr with exit code 2; a measuring
command prints one JSON object as its last stdout line.
"""

from __future__ import annotations

VERB_MODULES = ("listing", "card", "configs", "convert", "export", "bench", "validate", "train", "predict", "probe", "xray",
                "forgery", "demo")
