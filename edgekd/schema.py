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
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


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
    `.nan` are refused), parsed values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely (no tags that run code, no key given twice).

    Raises ConfigError with one line naming the file (missing, a folder, unreadable, not UTF-8)
    or the file and line (syntax error, duplicate key, nesting too deep).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a folder, not a YAML file"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no tags that run code
    except RecursionError:
        raise ConfigError([f"{path}: YAML nested too deeply to read"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, DuplicateKey):
            raise ConfigError([f"{path}:{where}: {problem}"]) from None
        raise ConfigError([f"{path}:{where}: YAML syntax error: {problem}"]) from None


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
