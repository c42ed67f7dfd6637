"""Layer outputs by module path, pulled with forward hooks so the models are never edited.

A path is what `model.named_modules()` lists: `net.0.5` is the sixth module of the cnn's
feature block (edgekd's Classifier wraps every network as `normalize` + `net`).
"""

from __future__ import annotations

import difflib

import torch
from torch import nn


def module_paths(model: nn.Module) -> list[str]:
    """Every named submodule's path (the model itself, path "", left out)."""
    return [name for name, _ in model.named_modules() if name]


def nearest_paths(model: nn.Module, path: str, n: int = 3) -> list[str]:
    """The real module paths closest to `path`, for error messages."""
    paths = module_paths(model)
    close = difflib.get_close_matches(path, paths, n=n, cutoff=0.0)
    return close or paths[:n]


def missing_path(model: nn.Module, path: str, role: str) -> str | None:
    """None if `path` names a module of `model`, else a message naming the nearest ones."""
    if path in dict(model.named_modules()):
        return None
    return f"no module {path!r} in the {role} (nearest: {', '.join(nearest_paths(model, path))})"


class Taps:
    """Records the outputs of named modules on every forward pass of `model`.

    `taps.outputs[path]` holds the latest output (with its autograd graph, so a loss on it
    trains the model). Use as a context manager or call `close()` to remove the hooks.
    """

    def __init__(self, model: nn.Module, paths: list[str]):
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[p].register_forward_hook(self._recorder(p))
                         for p in dict.fromkeys(paths)]

    def _recorder(self, path: str):
        def hook(_module, _inputs, output):
            # Copy in-place activations' outputs (ReLU(inplace=True)) before a later module
            # overwrites them: clone keeps the graph.
            self.outputs[path] = output.clone() if isinstance(output, torch.Tensor) else output

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Taps:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
