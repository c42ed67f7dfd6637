"""What a pipeline reads besides its own file: every model file its configs name, and the
content of a file or folder as one hash (edgekd.pipeline keys stages on both)."""

from __future__ import annotations

from pathlib import Path

from edgekd.files import sha256_file


def model_files(config) -> list[str]:
    """Every file or folder a model spec anywhere in a config dump reads: `checkpoint:`,
    `weights:`, the file of `module: file.py:function`, the folder of `arch: hf:<dir>`."""
    if isinstance(config, dict):
        found = [config[k] for k in ("checkpoint", "weights") if config.get(k)]
        module, arch = config.get("module"), config.get("arch")
        if isinstance(module, str) and module.rpartition(":")[0].endswith(".py"):
            found.append(module.rpartition(":")[0])
        if isinstance(arch, str) and arch.startswith("hf:"):
            found.append(arch.removeprefix("hf:"))
        return found + [p for v in config.values() if isinstance(v, dict | list)
                        for p in model_files(v)]
    if isinstance(config, list):
        return [p for item in config for p in model_files(item)]
    return []


def content_hash(path: Path, source: Path) -> str:
    """The content hash of a file, or of every file in a folder (by relative name)."""
    full = path.expanduser()
    full = full if full.is_absolute() else source.parent / full
    if full.is_dir():
        return ";".join(f"{f.relative_to(full)}={sha256_file(f)}"
                        for f in sorted(full.rglob("*")) if f.is_file())
    return sha256_file(full) if full.is_file() else f"missing:{full}"
