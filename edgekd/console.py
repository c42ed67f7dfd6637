"""What the user sees on the terminal: progress bars, and silence from chatty converters."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
import warnings


def progress(total: int, desc: str, unit: str = "it"):
    """A tqdm bar on stderr (rate and ETA in `unit`s), quiet when EDGEKD_PROGRESS=0 or stderr
    is not a terminal."""
    from tqdm import tqdm

    disable = not _terminal()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "img", leave=False,
                disable=disable)


def _terminal() -> bool:
    show = os.environ.get("EDGEKD_PROGRESS", "auto")
    return show == "1" or (show == "auto" and sys.stderr.isatty())


class EpochReport:
    """Shows finished training epochs: on the bar (loss, validation accuracy, images/s; the
    training loop advances the bar per batch) or,
    when stderr is not a terminal (CI logs, nohup, `| tee`), as a line with the ETA: the first
    and last epoch and at most one line every `every_s` seconds between, so a long stage is
    never silent and a fast one is not a wall of lines. Nothing with EDGEKD_PROGRESS=0 or an
    empty `desc` (ranks > 0)."""

    def __init__(self, bar, desc: str, epochs: int, every_s: float = 10.0):
        self.bar, self.desc, self.epochs, self.every_s = bar, desc, epochs, every_s
        self.last = float("-inf")

    def __call__(self, entry: dict, eta_s: float) -> None:
        val = entry["val_accuracy"]
        figures = {"loss": f"{entry['loss']:.3f}", "val": "-" if val is None else f"{val:.3f}",
                   "img/s": f"{entry['images_per_s']:.0f}"}
        if not self.bar.disable:
            self.bar.set_postfix(figures)
            if entry.get("stopped_early"):
                self.bar.write(f"{self.desc}: stopped early at epoch {entry['epoch']} "
                               "(patience spent)")
            return
        now = time.monotonic()
        stopped = entry.get("stopped_early", False)
        if not self.desc or os.environ.get("EDGEKD_PROGRESS") == "0" or (
                now - self.last < self.every_s and entry["epoch"] != self.epochs
                and not stopped):
            return
        self.last = now
        print(f"{self.desc}: epoch {entry['epoch']}/{self.epochs} loss {figures['loss']} val "
              f"{figures['val']} {figures['img/s']} img/s "
              + ("stopped early (patience spent)" if stopped else f"ETA {_duration(eta_s)}"),
              file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


LINE_MAX = 2000
"""The most characters of one line of a message edgekd prints: values from the user's files (a
path in a manifest, a name) can be of any length, and a 300 MB line helps no one."""
WORD_MAX = 300
"""The most characters of one word (a run of non-spaces: a path, a value) kept in such a line."""
_LONG_WORD = re.compile(rf"(?<!\S)\S{{{WORD_MAX + 1},}}")  # tried at word starts only: linear


def clip(text: str, limit: int = WORD_MAX) -> str:
    """`text` when at most `limit` characters, else its start and its end with "..." between
    (a path keeps where it starts and its file name)."""
    if len(text) <= limit:
        return text
    head = (limit - 3) // 2
    return f"{text[:head]}...{text[len(text) - (limit - 3 - head):]}"


def fit(text: str) -> str:
    """`text` fit for a terminal, line by line: every word over WORD_MAX characters clipped
    in the middle (`clip`), then each line over LINE_MAX. What is printed is a message; the
    whole value stays in the user's file (and a traceback in error.log)."""
    if len(text) <= WORD_MAX:
        return text
    return "\n".join(clip(_LONG_WORD.sub(lambda m: clip(m.group()), line), LINE_MAX)
                     for line in text.split("\n"))


LIBRARY_WARNINGS = (
    # JAX (imported by the TFLite converter) at every DataLoader worker's fork; the workers
    # only read images and never use JAX
    (RuntimeWarning, r"os\.fork\(\) was called"),
)
"""Third-party Python warnings that tell a user of edgekd nothing: (category, message)."""
LIBRARY_LOGGERS = ("torch.utils._pytree",)
"""Third-party loggers whose warnings are start-up chatter (torchao registering its enums)."""


def hush_libraries(verbose: bool = False) -> None:
    """Keep what libraries print when they start (JAX's fork warning, torch's pytree notice,
    TensorFlow's oneDNN and absl preamble) off the terminal; `verbose` (--verbose,
    EDGEKD_VERBOSE=1) keeps all of it. Call before those libraries are imported: TensorFlow
    reads its environment once. edgekd's own warnings are untouched.

    TF_ENABLE_ONEDNN_OPTS=0 is set either way (a user's own setting wins), so --verbose
    changes what is shown, never the arithmetic: TensorFlow's kernels run only inside the
    TFLite converter here, and its notice that oneDNN may round differently is printed
    whenever the variable is unset."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if verbose:
        os.environ["EDGEKD_VERBOSE"] = "1"  # also read where output is silenced (quiet)
    if os.environ.get("EDGEKD_VERBOSE"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING
    for category, message in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


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


class _OutputDropped:
    """sys.stdout that, once its reader has gone (`edgekd run ... | head`), sends what is
    left to /dev/null instead of raising BrokenPipeError: a closed pipe must not stop a run
    that trains for an hour."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # the pending and later writes go nowhere
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def survive_closed_stdout() -> None:
    """Keep the process going when the reader of its stdout or stderr goes away
    (`_OutputDropped`; `edgekd run p.yaml 2>&1 | head`)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _OutputDropped):
            continue
        try:
            stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (a test's capture)
            continue
        setattr(sys, name, _OutputDropped(stream))
