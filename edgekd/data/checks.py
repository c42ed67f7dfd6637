"""What a data location must hold, checked when it is loaded (before any stage runs), so that
a bad dataset is one line naming the file and the field, row or sample, never a traceback, a
hang or a silently wrong model.

- files: each image a regular file (not a FIFO, a device or a dangling symlink) whose header
  and structure read as an image (PIL `verify`: chunk checksums, no pixel decoding);
- arrays: `x`'s layout (channels first or last, 1-4 channels), dtype and value range, which
  fix how pixels become model inputs in [0, 1]; `y` as class indices;
- manifests: printable cells, each image listed once;
- folders: class-folder links that loop or repeat, each image file once.

Given splits are kept apart from the training data by edgekd.data.leakage.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from edgekd.schema import ConfigError

CHANNELS = (1, 2, 3, 4)
"""Channel counts an array's layout is told by: grey, grey + alpha, RGB, RGBA."""


def shown(path: Path | str) -> str:
    """`path` as printable text: bytes of a name that are not UTF-8, and control characters,
    as \\xNN escapes."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def file_problem(file: Path, what: str = "a file") -> str | None:
    """Why `file` cannot be read as a data file (`what`, said when it is a folder) following
    symlinks, in words; None if it is a regular file. Never opens it: opening a FIFO waits
    for a writer, forever."""
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        if file.is_symlink():
            return f"a symlink to {shown(os.readlink(file))}, which does not exist"
        return "not found"
    except OSError as exc:  # a symlink loop, a name too long, no permission on its folder
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return f"is a folder, expected {what}"
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, a device or a socket); give the file itself"
    return None


def regular_file(file: Path) -> None:
    """ConfigError naming `file` unless it is a regular file (see `file_problem`)."""
    problem = file_problem(file)
    if problem:
        raise ConfigError([f"{shown(file)}: {problem}"])


def image_problem(file: Path) -> str | None:
    """Why `file` is not a readable image, from its header and structure (PIL open + verify,
    which checks PNG chunk checksums but decodes no pixels); None if it reads."""
    from PIL import Image, UnidentifiedImageError

    problem = file_problem(file, "an image file")
    if problem:
        return problem
    try:
        with Image.open(file) as img:
            mode = img.mode
            img.verify()
        if mode in ("F", *WIDE_INTEGER_MODES):  # rare: their values decide how they are read
            with Image.open(file) as img:
                scale = float_pixel_scale if mode == "F" else integer_pixel_scale
                scale(np.asarray(img))
    except Image.DecompressionBombError as exc:
        return f"refused, too many pixels for an image ({exc}); resize it before training"
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as exc:
        return f"cannot read as an image ({exc})"
    except ConfigError as exc:
        return exc.lines[0]
    return None


def float_pixel_scale(values: np.ndarray) -> float:
    """What a 32-bit float image's `values` are multiplied by to become 0-255 pixels: 255 for
    values in [0, 1], 1 for values in [0, 255]; ConfigError (a line without the file, which
    the caller names) for non-finite values or values beyond both."""
    finite = np.isfinite(values)
    if not finite.all():
        raise ConfigError([f"{int((~finite).sum())} non-finite pixel value(s) (NaN or inf)"])
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low >= -1e-3 and high <= 1 + 1e-3:
        return 255.0
    if low >= -1e-3 and high <= 255 + 1e-3:
        return 1.0
    raise ConfigError([f"a 32-bit float image with values in [{low:g}, {high:g}]; float "
                       "images must be in [0, 1] or [0, 255]"])


WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
"""PIL modes of 16- and 32-bit integer greyscale images (read by `integer_pixel_scale`)."""


def integer_pixel_scale(values: np.ndarray) -> float:
    """What a 16- or 32-bit integer image's `values` are multiplied by to become 0-255 pixels:
    1/257 (65535 -> 255). ConfigError (a line without the file, which the caller names) for
    values beyond 0-65535 (a 32-bit image, PIL mode I), which that would clip to white or
    black, and for an image whose values never exceed 255 but are not all 0: 8-bit data saved
    in a 16-bit file, which 1/257 would turn into 0s and 1s (as the .npz reader refuses
    uint16 arrays that never exceed 255)."""
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise ConfigError([f"a 32-bit integer image with values in [{low}, {high}]; integer "
                           "images are read as 16-bit (0-65535): save it as 16-bit, or as "
                           "32-bit float in [0, 1]"])
    if 0 < high <= 255:
        raise ConfigError([f"a 16-bit image whose values never exceed 255 (they are in [{low}, "
                           f"{high}]): 8-bit data in a 16-bit file, which read as 16-bit would "
                           "be all but black; save it as 8-bit"])
    return 1 / 257


def check_images(files: list[Path], where: Path) -> None:
    """ConfigError naming the first of `files` (from the dataset at `where`) that is not a
    readable image, and how many others are not. Reads headers only: about 0.1 ms a small
    PNG."""
    bad = [(file, problem) for file in files if (problem := image_problem(file))]
    if bad:
        (file, problem), more = bad[0], len(bad) - 1
        others = f" ({more} other file(s) of {shown(where)} too)" if more else ""
        raise ConfigError([f"{shown(file)}: {problem}{others}"])


def printable(path: Path, line: int, field: str, value: str) -> None:
    """ConfigError naming the manifest row when a cell holds a NUL byte, a control character
    (an escape sequence would act on the terminal that prints the class name) or other
    unprintable text."""
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise ConfigError([f"{path}:{line}: the {field} {ascii(value)} holds the unprintable "
                           f"character {ascii(bad)}; {field}s must be plain text"])


def layout(path: Path, shape: tuple[int, ...]) -> bool:
    """True when `x` of `shape` (4 dimensions) is N x H x W x C, False for N x C x H x W:
    channels are the dimension of size 1-4 (channels first when both are). ConfigError with
    the shape when neither is."""
    if shape[1] in CHANNELS:
        return False
    if shape[3] in CHANNELS:
        return True
    raise ConfigError([f"{path}: x has shape {shape}: no dimension of 1-4 channels; x must be "
                       "N x H x W, N x C x H x W or N x H x W x C with C = 1 (grey), 2 (grey + "
                       "alpha), 3 (RGB) or 4 (RGBA)"])


def pixel_scale(path: Path, x: np.ndarray) -> float:
    """What `x`'s values are divided by to become inputs in [0, 1]: uint8 255, uint16 65535,
    other integer types 255 (8-bit values in a wider type), float 1. ConfigError naming the
    file when `x` is not numeric, holds NaN or inf, or lies outside its type's range: float
    beyond [0, 1] (0-255 floats are refused, not guessed), integers beyond 0-255 in a type
    other than uint8 / uint16, or uint16 that never exceeds 255 (8-bit values: 1/65535 would
    make every image black)."""
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer)
                                   or np.issubdtype(x.dtype, np.floating)):
        raise ConfigError([f"{path}: x has dtype {x.dtype}; images must be uint8 (0-255), "
                           "uint16 (0-65535) or float in [0, 1]"])
    if x.dtype == np.uint8:
        return 255.0
    low, high = _value_range(path, x)
    if np.issubdtype(x.dtype, np.floating):
        if low < -1e-3 or high > 1 + 1e-3:
            raise ConfigError([f"{path}: x is float with values in [{low:g}, {high:g}]; float "
                               "images must be in [0, 1] (or store uint8 0-255)"])
        return 1.0
    if x.dtype == np.uint16:
        if high <= 255:
            raise ConfigError([f"{path}: x is uint16 but no value exceeds 255: 8-bit pixels "
                               "in a 16-bit type (uint16 is scaled by 1/65535, which would "
                               "make them black); store them as uint8"])
        return 65535.0
    if low < 0 or high > 255:
        raise ConfigError([f"{path}: x is {x.dtype} with values in [{low:g}, {high:g}]; "
                           "integer images must be 0-255 (uint8, or any integer type), or "
                           "uint16 over 0-65535; else store float in [0, 1]"])
    return 255.0


def _value_range(path: Path, x: np.ndarray, chunk: int = 4096) -> tuple[float, float]:
    """The least and greatest finite values of `x`, read chunk by chunk (a memory-mapped
    array is never read whole); ConfigError counting NaN / inf values and samples."""
    bad = samples = 0
    low, high = np.inf, -np.inf
    for i in range(0, len(x), chunk):
        block = np.asarray(x[i:i + chunk])
        finite = np.isfinite(block)
        bad += int((~finite).sum())
        samples += int((~finite).reshape(len(block), -1).any(1).sum())
        if finite.any():
            low, high = min(low, float(block[finite].min())), max(high, float(block[finite].max()))
    if bad:
        raise ConfigError([f"{path}: x has {bad} non-finite value(s) (NaN or inf) in {samples} "
                           f"of {len(x)} samples"])
    return low, high


def labels(path: Path, y: np.ndarray, classes: list[str] | None) -> np.ndarray:
    """`y` as int64 class indices; ConfigError naming the file and what is wrong (with
    counts): no samples, non-numeric, non-finite, fractional or negative labels, or labels
    beyond the `classes` array."""
    if len(y) == 0:
        raise ConfigError([f"{path}: no samples (y is empty)"])
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
            or y.dtype == np.bool_):
        raise ConfigError([f"{path}: y has dtype {y.dtype}; labels must be integers 0..K-1"])
    problems = []
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y)
        if bad.any():
            problems.append(f"{int(bad.sum())} non-finite label(s)")
        fractional = np.isfinite(y) & (y != np.round(y))
        if fractional.any():
            problems.append(f"{int(fractional.sum())} fractional label(s), e.g. "
                            f"{y[fractional][0]:g}")
        if problems:
            raise ConfigError([f"{path}: y has {'; '.join(problems)}; labels must be integers "
                               "0..K-1"])
    y = y.astype(np.int64)
    if (y < 0).any():
        raise ConfigError([f"{path}: y has {int((y < 0).sum())} negative label(s), e.g. "
                           f"{int(y[y < 0][0])}; labels must be integers 0..K-1"])
    if classes is not None and y.max() >= len(classes):
        raise ConfigError([f"{path}: y has labels up to {int(y.max())} but `classes` names "
                           f"{len(classes)} class{'es' if len(classes) != 1 else ''}"])
    if classes is None and y.max() >= len(y):  # before a list of y.max() + 1 names is made
        absent = int(y.max()) + 1 - len(np.unique(y))
        raise ConfigError([f"{path}: labels run up to {int(y.max())} but {absent} number(s) "
                           f"in between have no sample (y has {len(y)} samples); number the "
                           "classes 0..K-1 or give a `classes` array"])
    return y


def distinct_classes(where: Path, names: list[str]) -> None:
    """ConfigError naming the class names that are the same, or the same text in another
    Unicode form (NFC "c\xe1t" and NFD "ca\u0301t" look alike: two classes, one name)."""
    import unicodedata

    seen: dict[str, str] = {}
    for name in names:
        key = unicodedata.normalize("NFC", name)
        if key in seen:
            how = "twice" if seen[key] == name else f"twice, as {ascii(seen[key])} and " \
                f"{ascii(name)} (one text in two Unicode forms)"
            raise ConfigError([f"{shown(where)}: the class name {shown(name)} appears {how}; "
                               "class names must be distinct"])
        seen[key] = name


def class_links(path: Path, classes: list[str]) -> None:
    """ConfigError naming the class folder when a symlinked one points into the dataset (its
    root: a loop; a folder inside: images read again, under another label), at a folder that
    holds the dataset (a loop), or where another class folder points (the same images twice).
    A symlink to a folder elsewhere, apart from the others, is a class like any other."""
    root, seen = path.resolve(), {}
    for name in classes:
        folder = path / name
        target = folder.resolve()
        if folder.is_symlink():
            if target == root or root in target.parents:
                where = "the dataset folder itself (a loop)" if target == root else \
                    f"{target.relative_to(root)}, inside the dataset (its images read twice)"
                raise ConfigError([f"{folder}: class folder is a symlink to {where}; give "
                                   "the class a folder of its own"])
            if target in root.parents:
                raise ConfigError([f"{folder}: class folder is a symlink to {target}, a "
                                   "folder that holds the dataset (a loop)"])
        if target in seen:
            raise ConfigError([f"{folder}: class folder is a symlink to the same folder as "
                               f"class {seen[target]} ({target}); its images would count "
                               "twice, under two labels"])
        seen[target] = name


def repeated(names: list[str]) -> str | None:
    """The first of `names` (CSV columns, JSON keys) that appears twice, else None."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def distinct_files(where: Path, files: list[Path]) -> None:
    """ConfigError naming two of `files` (the images of the dataset at `where`) that are one
    file (a symlink to another image of the dataset): one image would count twice, under two
    labels when the two sit in different class folders."""
    first: dict[str, Path] = {}
    for file in files:
        seen = first.setdefault(os.path.realpath(file), file)
        if seen != file:
            raise ConfigError([f"{shown(file)}: the same image file as {shown(seen)} (a "
                               f"symlink); {shown(where)} must hold each image once"])


def manifest_duplicates(path: Path, rows: list[tuple[int, str, str]]) -> None:
    """ConfigError naming the lines of the manifest `path` that list one image twice (by
    its real path): in both train and test it would leak, and under two labels it is
    contradictory."""
    first: dict[str, tuple[int, str]] = {}
    for line, file, label in rows:
        real = os.path.realpath(path.parent / file)
        seen_line, seen_label = first.setdefault(real, (line, label))
        if seen_line != line:
            how = f"with two labels ({seen_label} on line {seen_line}, {label} on line {line})" \
                if seen_label != label else f"(lines {seen_line} and {line}): it could land " \
                "in both the train and the test split"
            raise ConfigError([f"{path}:{line}: the image {shown(file)} is listed twice {how}; "
                               "list each image once"])


def archive_problem(path: Path) -> str | None:
    """What `path` (a regular file) is when it is not an .npz archive: a .npy, or anything
    else (np.load would read it as a pickle, and say so); None for a zip archive."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if head == b"\x93NUMPY":
        return ("a .npy file (one array), not an .npz archive of x and y; save both with "
                "np.savez(path, x=..., y=...)")
    if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        return ("not an .npz archive of arrays x and y (not a zip file); save one with "
                "np.savez(path, x=..., y=...)")
    return None


def model_input_problem(path: Path) -> str | None:
    """What keeps the .npz at `path` from being fed to a model as it is (`edgekd profile
    --data`: x goes to the runtime unconverted): not an .npz archive, or an `x` that is not
    float in [0, 1]; None if it can be (missing arrays and labels are checked elsewhere)."""
    problem = file_problem(path) or archive_problem(path)
    if problem:
        return problem
    try:
        with np.load(path, allow_pickle=False) as arrays:
            x = arrays["x"] if "x" in arrays.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return f"not an .npz file ({exc})"
    if x is None:
        return None
    if not np.issubdtype(x.dtype, np.floating):
        return (f"x is {x.dtype}; the model takes float32 pixels in [0, 1] as they are (the "
                "runtime does not scale): divide by the type's range (255 for uint8), or use "
                "the data/test-*.npz an edgekd run writes")
    try:
        pixel_scale(path, x)
    except ConfigError as exc:
        return exc.lines[0].removeprefix(f"{path}: ")
    return None
