"""What the user sees on the terminal: progress bars, and silence from chatty converters."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings


def progress(total: int, desc: str):
    """A tqdm bar on stderr, quiet when EDGEKD_PROGRESS=0 or stderr is not a terminal."""
    from tqdm import tqdm

    show = os.environ.get("EDGEKD_PROGRESS", "auto")
    disable = show == "0" or (show == "auto" and not sys.stderr.isatty())
    return tqdm(total=total, desc=desc, unit="ep", leave=False, disable=disable)



@contextlib.contextmanager
def quiet():
    """The converters print pages of progress, some of it from C++ straight to the file
    descriptors; keep it out of the user's terminal (EDGEKD_VERBOSE=1 shows it)."""
    if os.environ.get("EDGEKD_VERBOSE"):
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            logging.disable(previous)
