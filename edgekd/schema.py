"""The schema machinery every YAML file edgekd reads shares (pipelines, device profiles).

- `Strict`: the base model; unknown keys are errors and parsed configs are frozen.
- `read_yaml`: safe YAML loading; a syntax error or a key given twice names the file and the
  line.
- `parse`: validation that reports every problem at once, one line each, naming the file and
  the field path as the user wrote it: `pipelines/mobile.yaml: stages[1].budget.max_acuracy_drop:
  unknown key (did you mean max_accuracy_drop?)`.
- `did_you_mean`: the suggestion suffix used for keys, stage kinds, devices and layer names.

Nothing here imports torch, so `edgekd validate` stays instant.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class ConfigError(Exception):
    """A configuration file (or flag) is wrong; `lines` holds one message per problem, each
    starting with the file and the field it concerns."""

    def __init__(self, lines: list[str] | str):
        if isinstance(lines, str):
            # Re-raised from a DataLoader worker as one string: the worker's traceback, whose
            # last line is "...ConfigError: <the lines>".
            text = lines.rsplit("ConfigError: ", 1)[-1] if "Original Traceback" in lines \
                else lines
            lines = [line for line in text.splitlines() if line.strip()]
        super().__init__("\n".join(lines))
        self.lines = lines


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, numbers are finite (`.inf` and
    `.nan` are refused), `true` / `false` and strings are no numbers, parsed values are
    frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, raw: Any) -> Any:
        """YAML's true and false are ints to Python (and pydantic), so `epochs: true` would
        train one epoch, and pydantic reads `epochs: "1"` as 1: a boolean or a string is
        refused wherever a number is expected, also as an item of a list (`image_size: [true,
        8]`); fields that take yes / no or text ("2 MB") still do."""
        for key, value in raw.items() if isinstance(raw, dict) else ():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if field is None:
                continue
            items = value if isinstance(value, list | tuple) else [value]
            kinds = takes(field.annotation)
            if "number" not in kinds:
                continue
            if "bool" not in kinds and any(isinstance(v, bool) for v in items):
                raise ValueError(f"{key}: expected a number, not {str(value).lower()}")
            if "str" not in kinds and any(isinstance(v, str) for v in items):
                raise ValueError(f"{key}: expected a number, not the string {value!r}")
        return raw

    @model_validator(mode="before")
    @classmethod
    def _paths_fit(cls, raw: Any) -> Any:
        """A path longer than any file system takes is refused naming the field and its length
        (not echoed: it can be megabytes); the operating system would refuse it later with an
        error quoting it whole."""
        for key, value in raw.items() if isinstance(raw, dict) else ():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if field is not None and isinstance(value, str) and "path" in takes(field.annotation):
                problem = path_problem(value)
                if problem:
                    raise ValueError(f"{key}: {problem}")
        return raw


PATH_MAX_BYTES = 4096
"""The longest path Linux takes (PATH_MAX, in bytes with the terminating NUL)."""
NAME_MAX_BYTES = 255
"""The longest file or folder name (in bytes, UTF-8) ext4, XFS, APFS and NTFS take."""


def path_problem(path: str) -> str | None:
    """Why `path` is too long to name a file (as a whole, or one of its names), in words that
    give its length rather than the path itself; None when it is not."""
    size = len(path.encode("utf-8", "surrogatepass"))
    if size >= PATH_MAX_BYTES:
        return (f"a path of {size:,} bytes; a path is at most {PATH_MAX_BYTES - 1:,} bytes "
                "(PATH_MAX)")
    name = max(re.split(r"[/\\]", path), key=lambda n: len(n.encode("utf-8", "surrogatepass")))
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > NAME_MAX_BYTES:
        return (f"the name {name[:20]!r}... in this path is {size:,} bytes; a file or folder "
                f"name is at most {NAME_MAX_BYTES} bytes")
    return None


def takes(annotation: Any) -> set[str]:
    """The kinds of value `annotation` takes, of "number" (int, float, Literal[1, 3]),
    "bool", "str" and "path" (a Path, also "str"), through lists, tuples, unions and
    Annotated."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if node is bool:
            found.add("bool")
        elif node in (int, float):
            found.add("number")
        elif get_origin(node) is Literal:
            for a in get_args(node):
                found.add("bool" if isinstance(a, bool) else "number"
                          if isinstance(a, int | float) else "str")
        elif node is Any:
            found.update(("bool", "str"))
        elif isinstance(node, type) and issubclass(node, str | os.PathLike):
            found.update(("str", "path") if issubclass(node, os.PathLike) else ("str",))
        for arg in get_args(node) if get_origin(node) is not Literal else ():
            walk(arg)

    walk(annotation)
    return found


def did_you_mean(word: Any, choices: Iterable[Any]) -> str:
    """` (did you mean X?)` for the closest of `choices` to `word`, or "" when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping gives one key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last
    silently, so a second `stages:` would drop the first one's stages."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys brought in by `<<: *base` may be overridden, as YAML intends
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in first
            except TypeError:  # an unhashable key: the base class says so
                break
            if seen:
                raise DuplicateKey(None, None, f"key {key!r} given twice (first on line "
                                   f"{first[key] + 1})", key_node.start_mark)
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


# YAML 1.1 (PyYAML) reads `lr: 1e-3` as the string "1e-3" (its floats need a dot), which
# Strict refuses as a number given as a string: read such numbers as YAML 1.2 does, floats.
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


YAML_MAX_BYTES = 1 << 20
"""The largest pipeline or device YAML edgekd reads (a real one is a few kB)."""


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely (no tags that run code, no key given twice).

    Raises ConfigError with one line naming the file (missing, a folder, not a regular file,
    over YAML_MAX_BYTES, unreadable, not UTF-8) or the file and line (syntax error, duplicate
    key, nesting too deep).
    """
    data = read_limited(Path(path), YAML_MAX_BYTES, "YAML file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no tags that run code
    except RecursionError:
        raise ConfigError([f"{path}: YAML nested too deeply to read"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_error(path, text, exc)]) from None


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a file the user named, `what` it is in words ("YAML file"); ConfigError
    with one line naming it when it is missing, a folder, not a regular file (a FIFO or a
    device such as /dev/zero, which would never end) or larger than `limit` bytes."""
    import stat

    try:  # O_NONBLOCK: opening a FIFO waits for a writer otherwise
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a folder, not a {what}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ConfigError([f"{path}: is a folder, not a {what}" if stat.S_ISDIR(mode) else
                           f"{path}: is not a regular file (a FIFO, a device or a socket), "
                           f"not a {what}"])
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    if len(data) > limit:
        raise ConfigError([f"{path}: larger than a {what} can be (over {_size(limit)}): is it "
                           "the right file?"])
    return data


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> str:
    """`path: line N: problem` on one line, for any error PyYAML raises."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else None
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        problem = f"character #x{exc.character:04x} is not allowed in YAML" \
            if isinstance(exc.character, int) else exc.reason
    else:
        problem = getattr(exc, "problem", None) or str(exc)
    where = f"{path}: line {line}" if line else str(path)
    problem = " ".join(str(problem).split())
    if isinstance(exc, DuplicateKey):
        return f"{where}: {problem}"
    return f"{where}: YAML syntax error: {problem}"


def parse(model: type[BaseModel], raw: Any, source: str) -> Any:
    """Validate `raw` against `model`; raises ConfigError with every problem, one per line."""
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: expected a mapping of keys at the top level"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([error_line(source, model, e) for e in exc.errors()]) from None


def error_line(source: str, model: type[BaseModel], error: dict) -> str:
    """One pydantic error as `source: field.path: message`, the path as the user wrote it."""
    loc, owner, candidates = _walk(model, tuple(error["loc"]))
    where = _format_loc(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{source}: {where}: {_unknown_key(loc[-1], owner)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t for m in candidates for t in get_args(m.model_fields["kind"].annotation)]
        if kind == "union_tag_not_found":
            return f"{source}: {where}: missing 'kind' (one of {', '.join(tags)})"
        tag = error.get("ctx", {}).get("tag")
        return f"{source}: {where}.kind: unknown stage kind {tag!r}{did_you_mean(tag, tags)}"
    if kind == "missing":
        return f"{source}: {where}: required key missing"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", error.get("ctx", {}).get("expected", ""))
        return (f"{source}: {where}: {error['input']!r} is not one of {', '.join(choices)}"
                f"{did_you_mean(error['input'], choices)}")
    message = error["msg"].removeprefix("Value error, ")
    # Model-level validators name the field themselves ("path: required ...").
    if ": " in message and kind == "value_error" and not where.endswith(message.split(":")[0]):
        field, _, rest = message.partition(": ")
        if " " not in field:
            return f"{source}: {where + '.' if loc else ''}{field}: {rest}"
    return f"{source}: {where}: {message}"


def _unknown_key(key: Any, owner: type[BaseModel] | None) -> str:
    """"unknown key", with a suggestion, or with the reason a model gives for refusing it
    (a model may map keys it knows to be misplaced to an explanation: `misplaced_keys()`)."""
    misplaced = getattr(owner, "misplaced_keys", None)
    reason = misplaced().get(str(key)) if misplaced else None
    if reason:
        return f"not accepted here: {reason}"
    return "unknown key" + (did_you_mean(key, owner.model_fields) if owner else "")


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(annotation: Any) -> list[Any]:
    """The model classes an annotation may hold (through Optional, list, dict, Annotated)."""
    origin = get_origin(annotation)
    if origin is None:
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        return [annotation] if is_model else []
    found = []
    for arg in get_args(annotation):
        found.extend(_unwrap(arg))
    return found


def _walk(model: type[BaseModel], loc: tuple) -> tuple[tuple, type[BaseModel] | None, list]:
    """Follow a pydantic error location through the models, dropping union tags.

    Returns the location as the user wrote it, the model owning the last key, and the models
    the last location could hold (the choices of a tagged union).
    """
    shown: list = []
    current: list[type[BaseModel]] = [model]
    owner: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            shown.append(part)
            continue
        tagged = [m for m in current if m.model_fields.get("kind") is not None
                  and get_args(m.model_fields["kind"].annotation) == (part,)]
        if len(current) > 1 and tagged:
            current, owner = tagged, tagged[0]
            continue
        shown.append(part)
        owner = current[0] if current else None
        field = owner.model_fields.get(part) if owner else None
        current = _unwrap(field.annotation) if field else []
    return tuple(shown), owner, current
