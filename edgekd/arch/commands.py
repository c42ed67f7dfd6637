"""`edgekd validate-arch`: check a model's outputs on arm64 without arm64 hardware.

Exit codes: 0 pass, 1 internal error, 2 usage error (one line on stderr), 3 verdict fail.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from edgekd import exits
from edgekd.arch import sysroot
from edgekd.console import fit
from edgekd.files import write_json


@click.command("validate-arch")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--arch", default="arm64", show_default=True,
              help=f"Architecture to emulate ({', '.join(sysroot.ARCHES)}).")
@click.option("--data", type=click.Path(path_type=Path),
              help=".npz with x (float32 N x C x H x W in [0, 1]) and y; a fixed random "
                   "set when left out.")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Also write the full result to this JSON file.")
@click.option("--cpu", default=sysroot.DEFAULT_CPU, show_default=True,
              help="Emulated core: " + ", ".join(
                  f"{name} ({what})" for name, (_, what) in sysroot.ARCHES["arm64"].cpus.items()))
@click.option("--min-agreement", type=float, default=0.99, show_default=True,
              help="Lowest top-1 agreement with the native run that passes.")
@click.option("--max-abs-diff", type=float, default=None,
              help="Also fail when a logit differs by more than this (off by default: int8 "
                   "kernels may round differently on another CPU).")
def validate_arch_command(model: Path, arch: str, data: Path | None, json_path: Path | None,
                          cpu: str, min_agreement: float, max_abs_diff: float | None) -> None:
    """Run MODEL (.tflite or .onnx) with the arm64 builds of the runtimes under qemu
    user-mode emulation and natively here; compare top-1 and logits.

    The arm64 root (Debian, Python, the runtimes' wheels) is prepared once under
    $XDG_CACHE_HOME/edgekd (about a minute) and reused.
    """
    from edgekd.arch.sysroot import PrepareError
    from edgekd.arch.validate import RunError, UsageError, validate

    try:
        result = validate(model, arch, data, cpu=cpu, min_agreement=min_agreement,
                          max_abs_diff=max_abs_diff, log=lambda m: click.echo(m, err=True))
    except UsageError as exc:
        click.echo(fit(f"validate-arch: {exc}"), err=True)
        sys.exit(exits.USAGE)
    except (PrepareError, RunError) as exc:
        click.echo(fit(f"validate-arch: {exc}"), err=True)
        sys.exit(exits.INTERNAL)
    except Exception:  # anything else is a bug here: show it whole
        click.echo(traceback.format_exc(), err=True)
        sys.exit(exits.INTERNAL)
    if json_path is not None:
        write_json(json_path, result)
    click.echo(_describe(result))
    sys.exit(0 if result["passed"] else exits.GATE)


def _describe(result: dict) -> str:
    native, emulated = result["native"], result["emulated"]
    lines = [f"{result['model']}: {result['samples']} samples ({result['data']})",
             f"  {result['arch']:<8} qemu {result['emulator']['qemu']}, -cpu {result['cpu']}, "
             f"{emulated.get('runtime')}",
             f"  {native.get('machine', 'native'):<8} {native.get('runtime')}",
             f"  top-1 agreement   {result['top1_agreement']:.4f}  (min {result['min_agreement']})",
             f"  max abs logit diff {result['max_abs_diff']:.4g}  (logits up to "
             f"{result['logit_scale']:.3g})"]
    if "accuracy" in native and not result["data"].startswith("random"):
        lines.append(f"  accuracy          {emulated.get('accuracy', float('nan')):.4f} "
                     f"{result['arch']} / {native['accuracy']:.4f} native")
    lines.append(f"verdict: {result['verdict'].upper()}"
                 + (f" ({'; '.join(result['reasons'])})" if result["reasons"] else ""))
    return "\n".join(lines)
