"""What torchrun starts for `edgekd run --nproc N`: rank 0 runs the `edgekd` command line as
usual, the other ranks follow its distributed stages (see edgekd.kd.distributed).

Rank 0 writes its exit code to $EDGEKD_EXIT_FILE so `edgekd run --nproc` can return it
(torchrun itself only says whether every process exited 0). A run that ended cleanly
(pass, gate failed, config error) releases the other ranks and exits 0; an internal error
exits 1 so torchrun stops the ranks that may be blocked in a collective.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgekd.kd import distributed


def main(args: list[str]) -> int:
    if not distributed.init():
        return distributed.serve()
    from edgekd.cli import cli

    try:
        cli.main(args=args, prog_name="edgekd", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if os.environ.get(distributed.EXIT_FILE_ENV):
        Path(os.environ[distributed.EXIT_FILE_ENV]).write_text(str(code))
    if code in (0, 2, 3):
        distributed.release()
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
