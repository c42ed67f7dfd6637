"""`edgekd profile` and `edgekd devices`: click commands the CLI registers.

Exit codes: 0 done, 1 internal error, 2 bad input (model, data, profile, --set), 4 device
unavailable (unreachable, auth refused, offline, timeout, missing Python / runtime / tool),
5 the model failed on the device. Nothing heavy is imported here at import time.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from edgekd import exits
from edgekd.console import fit
from edgekd.devices.profiles import MAX_THREADS
from edgekd.files import kind_problem

MAX_RUNS = 1_000_000
"""The most timed (and warm-up) inferences --runs and --warmup take, as the pipeline's profile
stage (edgekd/config/stages.py): more would run for days."""


def _load(device: str, overrides: tuple[str, ...], runs: tuple[str, ...] = ()):
    """The device profile with its --set overrides, able to run files of the suffixes in
    `runs`; exit 2 with one line per problem otherwise."""
    from edgekd.devices.profiles import load_profile, parse_overrides
    from edgekd.schema import ConfigError

    try:
        return load_profile(device, parse_overrides(overrides), runs=runs)
    except ConfigError as exc:
        for line in exc.lines:
            click.echo(fit(line), err=True)
        sys.exit(exits.USAGE)


def _usage(message: str) -> None:
    click.echo(fit(message), err=True)
    sys.exit(exits.USAGE)


class Count(click.ParamType):
    """A whole number from `low` to `high`; anything else exits 2 with one line naming the
    flag (click's own error is three lines, its usage first)."""

    name = "integer"

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def convert(self, value, param, ctx) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or not self.low <= number <= self.high:
            _usage(f"{param.opts[0]} {value}: expected a whole number from {self.low} to "
                   f"{self.high:_}".replace("_", ","))
        return number

    def get_metavar(self, param, ctx=None) -> str:
        return f"{self.low}..{self.high}"


def _check_inputs(model: Path, data: Path | None) -> None:
    from edgekd.export.formats import SUFFIXES, not_a_model, suffix_list

    if model.suffix not in SUFFIXES:
        _usage(f"{model}: expected a {suffix_list()} file")
    if kind_problem(model, "file"):
        _usage(f"{model}: {kind_problem(model, 'file')}")
    problem = not_a_model(model)
    if problem:
        _usage(f"{model}: {problem}")
    if data is None:
        return
    if data.is_dir():
        _usage(f"--data {data}: a folder; profile takes an .npz with x (N x C x H x W float32 "
               "pixels in [0, 1], as the model's input) and y (integer labels), such as the "
               "data/test-*.npz an edgekd run with a profile stage writes")
    if kind_problem(data, "file"):
        _usage(f"--data {data}: {kind_problem(data, 'file')}")
    import numpy as np

    from edgekd.data.checks import model_input_problem

    problem = model_input_problem(data)  # .npy, not .npz; x not float in [0, 1]
    if problem:
        _usage(f"--data {data}: {problem}")
    try:
        with np.load(data) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            y = None if missing else arrays["y"]
    except (OSError, ValueError) as exc:
        _usage(f"--data {data}: not an .npz file ({exc})")
    if missing:
        _usage(f"--data {data}: missing array(s) {', '.join(missing)} (expected x and y)")
    problem = _label_problem(y)
    if problem:
        _usage(f"--data {data}: {problem}")


def _label_problem(y) -> str | None:
    """What is wrong with `y` as class labels (integers >= 0), with counts; None if nothing.
    Whether each is below the model's number of outputs is checked where the model runs."""
    import numpy as np

    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer)
                           or np.issubdtype(y.dtype, np.floating)):
        return f"y is {y.dtype} of shape {y.shape}; labels must be integers 0..K-1, one per sample"
    bad = ~np.isfinite(y) | (y != np.round(y)) | (y < 0) if y.dtype.kind == "f" else y < 0
    if bad.any():
        return (f"y has {int(bad.sum())} label(s) that are not integers >= 0, e.g. "
                f"{y[bad][0]:g}; labels must be class numbers 0..K-1")
    return None


def _check_json_out(json_path: Path, model: Path, data: Path | None) -> None:
    """Exit 2 unless `json_path` may take the result: a new file in a folder edgekd can write,
    or an earlier `edgekd profile --json` result (never a pipeline, a report, an input)."""
    if json_path.is_dir():
        _usage(f"--json {json_path}: a folder; give a file name")
    if json_path.resolve() in {model.resolve(), *([data.resolve()] if data else [])}:
        _usage(f"--json {json_path}: that is an input of this command; give another file")
    if json_path.is_symlink() or (json_path.exists() and not json_path.is_file()):
        _usage(f"--json {json_path}: not a plain file (a link or a device); give a file name")
    if json_path.exists() and not _profile_result(json_path):
        _usage(f"--json {json_path}: exists and is not an earlier `edgekd profile --json` "
               "result; give a new file name (edgekd overwrites only its own results)")
    from edgekd.files import check_writable
    from edgekd.schema import ConfigError

    try:  # where the result (or its folder, made after measuring) will be written
        check_writable(json_path.absolute().parent, "the --json result", create=False)
    except ConfigError as exc:
        _usage(f"--json {json_path}: {exc.lines[0]}; give a file in a folder you can write")


def _profile_result(path: Path) -> bool:
    """True when `path` holds what `edgekd profile --json` writes (recognised by its keys)."""
    import dataclasses
    import json

    from edgekd.devices.result import ProfileResult
    from edgekd.schema import ConfigError, read_limited

    keys = {"model", "source", *(f.name for f in dataclasses.fields(ProfileResult))}
    try:
        doc = json.loads(read_limited(path, 1 << 20, "JSON file"))
    except (ConfigError, ValueError):
        return False
    return isinstance(doc, dict) and set(doc) == keys


@click.command("profile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--device", "device_name", required=True,
              help="A shipped profile (`edgekd devices`) or a path to a profile YAML.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a profile field, e.g. --set host=mypi (repeatable).")
@click.option("--runs", type=Count(1, MAX_RUNS), default=100, show_default=True)
@click.option("--warmup", type=Count(0, MAX_RUNS), default=10, show_default=True)
@click.option("--threads", type=Count(1, MAX_THREADS), help="Default: the profile's threads.")
@click.option("--data", type=click.Path(path_type=Path),
              help=".npz with x and y: also measure accuracy on the device.")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Write the result as JSON here.")
@click.option("--benchmark-binary", type=click.Path(path_type=Path),
              help="TFLite benchmark_model to push (devices using benchmark_model).")
@click.option("--op-profile", type=click.Path(path_type=Path),
              help="Save a per-op profile CSV here (benchmark_model's; for .pte files, "
                   "ExecuTorch's ETDump, when the runtime has event tracing).")
@click.option("--on-unreachable", type=click.Choice(["fail", "estimate"]), default="fail",
              show_default=True, help="estimate: fall back to a spec-sheet estimate.")
def profile_command(model: Path, device_name: str, overrides: tuple[str, ...], runs: int,
                    warmup: int, threads: int | None, data: Path | None,
                    json_path: Path | None, benchmark_binary: Path | None,
                    op_profile: Path | None, on_unreachable: str) -> None:
    """Profile a .tflite, .onnx or .pte MODEL on a device and print its metrics."""
    device = _load(device_name, overrides, (model.suffix,))
    _check_inputs(model, data)
    if json_path is not None:  # said now, not after the measurement
        _check_json_out(json_path, model, data)
    if benchmark_binary is not None and kind_problem(benchmark_binary, "file"):
        _usage(f"--benchmark-binary {benchmark_binary}: {kind_problem(benchmark_binary, 'file')}")
    from edgekd.devices.measure import DeviceError, profile

    try:
        result = profile(model, device, runs=runs, warmup=warmup, threads=threads, data=data,
                         on_unreachable=on_unreachable, benchmark_binary=benchmark_binary,
                         op_profile=op_profile)
    except DeviceError as exc:
        tries = f" after {exc.attempts} attempt{'s' * (exc.attempts > 1)}"
        if exc.kind == "infrastructure":
            click.echo(fit(f"device {device.name} unavailable ({exc.reason}){tries}: {exc}"),
                       err=True)
            sys.exit(exits.DEVICE_UNAVAILABLE)
        if exc.reason == "input":  # the data given does not fit the model
            _usage(f"{model}: {exc} (--data {data})")
        click.echo(fit(f"{model}: failed on device {device.name}: {exc}"), err=True)
        sys.exit(exits.MODEL_FAILED_ON_DEVICE)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        click.echo(fit(f"internal error: {type(exc).__name__}: {exc}"), err=True)
        sys.exit(exits.INTERNAL)
    doc = {"model": str(model), **result.to_json()}
    if json_path is not None:
        from edgekd.files import write_json

        write_json(json_path, doc)
    click.echo(format_result(model, device, result))


def format_result(model: Path, device, result) -> str:
    """The table `edgekd profile` prints."""
    c = result.conditions
    source = "measured" if result.measured else "ESTIMATED (not measured)"
    lines = [f"model      {model}",
             f"device     {device.name} ("
             + ("this host" if device.transport == "local" else
                f"{device.transport} {device.address}") + ")",
             f"runtime    {result.runtime}"
             + (f" {c['runtime_version']}" if c.get("runtime_version") else "")
             + f", {c.get('threads', '?')} thread(s), {source}, {result.attempts} attempt(s)"]
    temps = [c.get(f"temperature_c_{w}") for w in ("before", "after")]
    if any(t is not None for t in temps):
        lines.append("temp       " + " -> ".join(f"{t:.1f} C" if t is not None else "?"
                                                 for t in temps))
    throttle = [c.get(f"throttled_{w}") for w in ("before", "after")]
    if any(t is not None for t in throttle):
        lines.append("throttled  " + " -> ".join(str(t) for t in throttle))
    if c.get("unreachable"):
        lines.append(f"why        {c['unreachable']}")
    if not result.measured:
        from edgekd.devices.estimate import describe

        lines.append(f"estimate   {describe(c)}")
    if c.get("op_profile"):
        lines.append(f"op profile {c['op_profile']}")
    lines.append("")
    width = max((len(k) for k in result.metrics), default=6)
    lines += [f"{name:<{width}}  {value:>12.5g} {_unit(name)}".rstrip()
              for name, value in result.metrics.items()]
    lines += [f"SUSPECT: {why}" for why in result.suspect]
    return "\n".join(lines)


def _unit(metric: str) -> str:
    """The unit of a profile metric, by its name: `_ms` is ms, `_mb` MiB (VmHWM / 1024)."""
    return "ms" if "_ms" in metric else "MiB" if metric.endswith("_mb") else ""


@click.group("devices", invoke_without_command=True)
@click.option("--no-check", is_flag=True, help="List without trying to reach each device.")
@click.pass_context
def devices_group(ctx: click.Context, no_check: bool) -> None:
    """List device profiles, their transport and whether each is reachable now."""
    if ctx.invoked_subcommand is not None:
        return
    from edgekd.devices.check import reachable
    from edgekd.devices.profiles import load_profile, profile_names
    from edgekd.schema import ConfigError

    rows, profiles = [], {}
    for name in profile_names():
        try:
            profiles[name] = load_profile(name)
        except ConfigError as exc:
            rows.append((name, "?", "?", f"invalid profile: {exc.lines[0]}"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = {n: (pool.submit(reachable, d) if not no_check else None)
                   for n, d in profiles.items()}
        for name, device in profiles.items():
            state = answers[name].result()[1] if answers[name] else "not checked"
            rows.append((name, device.transport, device.address, state))
    rows.sort()
    click.echo(f"{'name':<20} {'transport':<9} {'address':<28} reachable")
    for name, transport, address, state in rows:
        click.echo(f"{name:<20} {transport:<9} {address:<28} {state}")


@devices_group.command("check")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a profile field, e.g. --set host=mypi (repeatable).")
@click.option("--benchmark-binary", type=click.Path(path_type=Path))
def check_command(name: str, overrides: tuple[str, ...], benchmark_binary: Path | None) -> None:
    """Say precisely what works on device NAME: connection, work dir, Python, runtimes, tools."""
    from edgekd.devices.check import check_device

    device = _load(name, overrides)
    click.echo(f"device {device.name}: {device.transport} {device.address}")
    findings = check_device(device, benchmark_binary)
    for f in findings:
        click.echo(f"  {f.status:<5} {f.name:<18} {f.detail}")
    if any(f.status == "FAIL" for f in findings):
        sys.exit(exits.DEVICE_UNAVAILABLE)
