"""The `edgekd` command. Imports nothing heavy at import time: `edgekd --help` and
`edgekd validate` never load torch. Exit codes: edgekd.exits.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from edgekd import __version__, exits
from edgekd.console import fit
from edgekd.schema import ConfigError
from edgekd.stages import STAGES


def _say(line: str) -> None:
    """A message on stderr, a value of any length in it (a path read from a manifest)
    clipped in the middle (edgekd.console.fit)."""
    click.echo(fit(line), err=True)


def _fail_config(exc: ConfigError) -> None:
    for line in exc.lines:
        _say(line)
    sys.exit(exits.USAGE)


INTERRUPT_MESSAGES = {
    "run": "interrupted: finished stages and the last epoch checkpoint are kept; rerun to resume",
    "profile": "interrupted: the measurement was stopped; nothing was written",
}
"""What Ctrl-C leaves behind, per command (others say only "interrupted")."""


class _Cli(click.Group):
    """The edgekd group: Ctrl-C in any command ends with one line and exit 130. It is caught
    here, inside click: click's standalone mode turns KeyboardInterrupt into "Aborted!" and
    exit 1 before it could reach main()."""

    def invoke(self, ctx: click.Context):
        from edgekd.console import survive_closed_stdout

        survive_closed_stdout()  # `edgekd run p.yaml | head` must not end the run
        try:
            with _terminated_raises():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(err=True)  # ends the line the terminal's ^C is on
            click.echo(INTERRUPT_MESSAGES.get(ctx.invoked_subcommand, "interrupted"), err=True)
            sys.exit(exits.INTERRUPTED)
        except Terminated:
            message = INTERRUPT_MESSAGES.get(ctx.invoked_subcommand, "interrupted")
            click.echo(message.replace("interrupted", "terminated (SIGTERM)", 1), err=True)
            sys.exit(exits.TERMINATED)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last guard: one line and a log
            _internal_error(exc, ctx.invoked_subcommand)


class Terminated(BaseException):
    """SIGTERM (a `kill`, a job scheduler's stop) as an exception, so a run ends as Ctrl-C
    ends it: one line saying what is kept, exit 143 (128 + 15)."""


@contextmanager
def _terminated_raises() -> Iterator[None]:
    def stop(_signum, _frame):
        raise Terminated

    try:
        before = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _internal_error(exc: Exception, command: str | None, run_dir: Path | None = None) -> None:
    """An exception no command turned into its documented exit: one line naming it, the
    traceback in `run_dir`/error.log, else a temporary file (`details:` names it), exit 1."""
    import tempfile
    import traceback

    from edgekd.files import write_text

    if run_dir is None:
        with tempfile.NamedTemporaryFile("w", prefix="edgekd-error-", suffix=".log",
                                         delete=False) as log:
            log.write(traceback.format_exc())
    name = write_text(run_dir / "error.log", traceback.format_exc()) if run_dir else log.name
    _say(f"internal error in edgekd {command or ''}: {type(exc).__name__}: {exc}")
    click.echo(f"details: {name} (please include it in a bug report)", err=True)
    sys.exit(exits.INTERNAL)


def _own_run_dir(source: Path, out: Path | None) -> Path | None:
    """The run directory of `edgekd run SOURCE --out OUT` when edgekd made it (it holds the
    run lock), so an error.log written there overwrites nothing of the user's; else None."""
    from edgekd.config import load_pipeline

    try:
        run_dir = out or Path("runs") / load_pipeline(source).name
    except Exception:  # noqa: BLE001 - the error being reported may come from here too
        return None
    return run_dir if (run_dir / ".lock").is_file() else None


@click.group(cls=_Cli)
@click.version_option(__version__, prog_name="edgekd")
@click.option("--verbose", is_flag=True, help="Show what the converters and runtimes print "
              "(kept off the terminal otherwise; the same as EDGEKD_VERBOSE=1).")
def cli(verbose: bool) -> None:
    """Distil a teacher into a small student, quantize it to int8, export it to ONNX,
    TFLite and ExecuTorch, and profile it on edge devices, gated on budgets."""
    from edgekd.console import hush_libraries

    hush_libraries(verbose)  # before any library is imported: some read the environment once


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Run directory [runs/<name>].")
@click.option("--force", type=click.Choice(tuple(STAGES)),
              help="Rerun this stage and every later one, ignoring the cache.")
@click.option("--no-gate", is_flag=True,
              help="Record failed budgets and go on (exit 3 at the end).")
@click.option("--nproc", type=click.IntRange(min=1),
              help="Train in N processes (torchrun, DDP): one per GPU on CUDA, gloo on the CPU.")
@click.option("--device", help="Train on this device instead of the pipeline's "
              "(auto, cpu, cuda, cuda:N, mps).")
def run(pipeline: Path, out: Path | None, force: str | None, no_gate: bool,
        nproc: int | None, device: str | None) -> None:
    """Run a pipeline: teacher, distill, quantize, export, profile, with budgets."""
    from edgekd import parallel

    if nproc and nproc > 1 and not parallel.launched():
        backend = _backend(pipeline, nproc, device)
        sys.exit(parallel.launch(nproc, ["run", str(pipeline)]
                                 + (["--out", str(out)] if out else [])
                                 + (["--force", force] if force else [])
                                 + (["--no-gate"] if no_gate else [])
                                 + (["--device", device] if device else []), backend))
    if not parallel.launched():
        sys.exit(_run(pipeline, out, force, no_gate, device))
    if not parallel.init():
        from edgekd.pipeline import serve

        sys.exit(serve())  # ranks > 0 follow rank 0's data-parallel stages
    try:
        code = _run(pipeline, out, force, no_gate, device)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        parallel.finish(exits.INTERNAL)
        raise
    sys.exit(parallel.finish(code))


def _backend(source: Path, nproc: int, device: str | None) -> str:
    """The process-group backend for `--nproc N` (nccl for CUDA, else gloo); exit 2 with one
    line when the pipeline is invalid or asks for more GPUs than are visible."""
    from edgekd.kd.compute import cuda_count, wants_cuda
    from edgekd.pipeline import load

    try:
        pipeline = load(source, device)
    except ConfigError as exc:
        _fail_config(exc)
    if not wants_cuda(pipeline.device):
        return "gloo"
    count = cuda_count()
    if nproc > count:
        advice = f"use --nproc {count}" if count else "train on the CPU with --device cpu"
        click.echo(f"{source}: device: --nproc {nproc} needs {nproc} GPUs (one per process) "
                   f"but {count} {'is' if count == 1 else 'are'} visible; {advice}", err=True)
        sys.exit(exits.USAGE)
    return "nccl"


def _run(pipeline: Path, out: Path | None, force: str | None, no_gate: bool,
         device: str | None = None) -> int:
    """Run the pipeline in this process, write the report, print the summary; the exit code.
    A config error found inside a stage prints its line only (the report is still written)."""
    from edgekd import report
    from edgekd.files import write_text
    from edgekd.pipeline import execute

    try:
        result = execute(pipeline, out=out, force=force, gate=not no_gate,
                         log=_say, device=device)
    except ConfigError as exc:
        _fail_config(exc)
    except Exception as exc:  # noqa: BLE001 - before any stage ran (reading data, the teacher)
        _internal_error(exc, "run", _own_run_dir(pipeline, out))
    if result.exit_code == exits.USAGE and result.message:
        _say(result.message.split(": ", 1)[1])
    doc = report.write(result)
    if result.traceback:
        write_text(result.run_dir / "error.log", result.traceback)
    if result.exit_code != exits.USAGE:
        _summary(doc, result.run_dir)
    if result.message and result.exit_code != exits.USAGE:
        _say(result.message)
    if result.traceback and result.exit_code != exits.USAGE:  # a usage line names its log
        click.echo(f"details: {result.run_dir / 'error.log'}", err=True)
    return result.exit_code


def _summary(doc: dict, run_dir: Path) -> None:
    """The few lines a person reads after a run: each stage's own summary figures."""
    click.echo(f"verdict: {doc['verdict'].upper()}  ({run_dir / 'report.html'})")
    origin = next((s["info"]["test_split"] for s in doc["stages"]
                   if "test_split" in (s.get("info") or {})), None)
    if origin:
        click.echo(f"  accuracies are on the test split, {origin}")
    for stage in doc["stages"]:
        for label, value in stage["summary"].items():
            click.echo(f"  {label:<36} {value:.4g}")
    for stage in doc["stages"]:
        for warning in stage["warnings"]:
            click.echo(fit(f"  WARNING {warning}"))


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check pipeline and device YAML files without running anything."""
    from edgekd.devices.profiles import DeviceProfile
    from edgekd.pipeline import load
    from edgekd.schema import parse, read_yaml

    problems: list[str] = []
    for path in files:
        try:
            raw = read_yaml(path)
            if isinstance(raw, dict) and "stages" not in raw and "transport" in raw:
                parse(DeviceProfile, {"name": path.stem, **raw}, str(path))
            else:
                load(path)
        except ConfigError as exc:
            problems += exc.lines
    for line in problems:
        _say(line)
    if problems:
        sys.exit(exits.USAGE)
    click.echo(f"ok: {len(files)} file(s) valid")


@cli.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
def report_command(run_dir: Path) -> None:
    """Re-render report.html from a run directory's report.json."""
    from edgekd.files import Busy, shared

    try:
        with shared(run_dir / ".lock"):  # not while a run rewrites what it reports
            _rerender(run_dir)
    except Busy as busy:
        who = f" (pid {busy.pid})" if busy.pid else ""
        click.echo(f"{run_dir}: an edgekd run{who} is using this run directory; its report "
                   "is written when it ends", err=True)
        sys.exit(exits.USAGE)
    except ConfigError as exc:
        _fail_config(exc)


def _rerender(run_dir: Path) -> None:
    from edgekd.report import stale, write_html

    source = run_dir / "report.json"
    if not source.is_file():
        click.echo(f"{source}: no report.json in this run directory", err=True)
        sys.exit(exits.USAGE)
    from edgekd.files import REPORT_MAX_BYTES
    from edgekd.schema import read_limited

    try:
        doc = json.loads(read_limited(source, REPORT_MAX_BYTES, "report.json"))
    except ConfigError as exc:
        _fail_config(exc)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        click.echo(f"{source}: not a report.json: {exc}", err=True)
        sys.exit(exits.USAGE)
    except RecursionError:
        click.echo(f"{source}: not a report.json: JSON nested too deeply to read", err=True)
        sys.exit(exits.USAGE)
    missing = [k for k in REPORT_KEYS if k not in doc] if isinstance(doc, dict) else REPORT_KEYS
    if missing:
        click.echo(f"{source}: not an edgekd report (no {', '.join(missing)})", err=True)
        sys.exit(exits.USAGE)
    why = stale(doc, run_dir)
    if why:  # its verdict may no longer hold: say so rather than draw it again
        click.echo(f"{source}: out of date: {why}; not re-rendered: run the pipeline again "
                   "(`edgekd run`, which reuses finished stages) for a current report", err=True)
        sys.exit(exits.USAGE)
    try:
        write_html(doc, run_dir / "report.html")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        _say(f"{source}: an edgekd report with fields of the wrong shape "
             f"({type(exc).__name__}: {exc})")
        sys.exit(exits.USAGE)
    except OSError as exc:
        click.echo(f"{run_dir / 'report.html'}: cannot write it: {exc.strerror}", err=True)
        sys.exit(exits.USAGE)
    click.echo(f"wrote {run_dir / 'report.html'} (verdict {doc['verdict']})")


REPORT_KEYS = ["pipeline", "verdict", "target", "started", "duration_s", "checks", "stages",
               "environment"]
"""The fields report.html is rendered from."""


def _add_commands() -> None:
    """Commands that live with their concern; importing them loads nothing heavy."""
    from edgekd.arch.commands import validate_arch_command
    from edgekd.devices.commands import devices_group, profile_command
    from edgekd.export.commands import check_model_command

    cli.add_command(check_model_command, "check-model")
    cli.add_command(profile_command, "profile")
    cli.add_command(devices_group, "devices")
    cli.add_command(validate_arch_command, "validate-arch")


_add_commands()


def main() -> None:
    cli()
