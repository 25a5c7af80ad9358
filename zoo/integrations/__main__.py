"""``python -m attnzoo.integrations``: whether the installed frameworks are ones the bridges support, one line each.

Prints ``ultralytics <version>: <names> registered`` and exits 0, or ``zoo: error: <message>`` (one line, the fix
named) and exits 2, as the ``zoo`` command does for a :class:`~attnzoo.errors.ZooError`.
"""

from __future__ import annotations

import sys

from ..errors import EXIT_USER_ERROR, ZooError


def main() -> int:
    try:
        from . import ultralytics as bridge

        names = bridge.register()
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    import ultralytics

    print(f"ultralytics {ultralytics.__version__}: {', '.join(names)} registered (attnzoo.integrations.ultralytics)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
