"""Real peers on loopback for the device tests: an OpenSSH server with throwaway keys, a
private adb server with the device emulator of adb_emulator.py, and tiny real models."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from devhelpers import BIN, SSHD, Sshd, free_port  # noqa: E402


def _need_sshd() -> None:
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        pytest.skip("openssh-server / openssh-client not installed (run tests/system_deps.sh)")
    if os.geteuid() != 0:
        pytest.skip("the test sshd runs as root")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """One sshd shared by the tests that do not stop it."""
    _need_sshd()
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.kill()


@pytest.fixture
def own_sshd(tmp_path):
    """An sshd this test may kill and restart."""
    _need_sshd()
    server = Sshd(tmp_path / "sshd").start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def adb_server(tmp_path_factory):
    """A private adb server (HOME is a temp dir, so its key is a throwaway one); the adb
    clients edgekd starts find it through ANDROID_ADB_SERVER_PORT."""
    if shutil.which("adb") is None:
        pytest.skip("adb not installed (run tests/system_deps.sh)")
    home = tmp_path_factory.mktemp("adb-home")
    port = str(free_port())
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": port}
    subprocess.run(["adb", "-P", port, "start-server"], env=env, check=True,
                   capture_output=True, timeout=30)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANDROID_ADB_SERVER_PORT", port)
        try:
            yield {"home": home, "port": port,
                   "public_key": (home / ".android" / "adbkey.pub").read_text()}
        finally:
            subprocess.run(["adb", "-P", port, "kill-server"], env=env, capture_output=True,
                           timeout=30)


@pytest.fixture
def adb_device(adb_server):
    """Make emulated devices (trusting the adb server's key unless told otherwise); each is
    disconnected from the server and closed at the end."""
    from adb_emulator import AdbDevice

    made = []

    def make(trust: bool = True, **options) -> AdbDevice:
        keys = (adb_server["public_key"],) if trust else ()
        env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               **options.pop("env", {})}
        device = AdbDevice(secure=True, authorized_keys=keys, env=env, **options)
        made.append(device)
        return device

    yield make
    for device in made:
        subprocess.run(["adb", "disconnect", device.serial], capture_output=True, timeout=30)
        device.close()


MODEL_FILES = {"data": "data.npz", "onnx_fp32": "tiny_fp32.onnx", "onnx_int8": "tiny_int8.onnx",
               "tflite_fp32": "tiny_fp32.tflite", "tflite_int8": "tiny_int8.tflite"}


@pytest.fixture(scope="session")
def models() -> dict[str, Path]:
    """A tiny CNN as fp32 / int8 ONNX and fp32 / int8 TFLite, plus test data (`data`) whose
    labels are the fp32 model's own predictions, so accuracy 1.0 is reachable.

    Built once and kept under ~/.cache/edgekd/test-models, keyed by this file and the
    converter versions (conversion takes 10-30 s; the device tests are not about it)."""
    from importlib.metadata import version

    key = hashlib.sha256(Path(__file__).read_bytes())
    for package in ("torch", "litert-torch", "torchao", "onnxruntime", "onnx"):
        key.update(version(package).encode())
    cache = Path.home() / ".cache" / "edgekd" / "test-models" / key.hexdigest()[:16]
    paths = {name: cache / file for name, file in MODEL_FILES.items()}
    if not all(p.exists() for p in paths.values()):
        building = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        building.mkdir(parents=True, exist_ok=True)
        build_models(building)
        shutil.rmtree(cache, ignore_errors=True)
        building.rename(cache)
    return paths


def build_models(out: Path) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(out / "data.npz", x=x, y=y)
    example = (torch.from_numpy(x[:1]),)
    paths = {name: out / file for name, file in MODEL_FILES.items()}
    torch.onnx.export(model, example, paths["onnx_fp32"], dynamo=True, external_data=False,
                      opset_version=18)
    _onnx_int8(paths["onnx_fp32"], paths["onnx_int8"], x)
    _tflite(model, example, x, paths["tflite_fp32"], paths["tflite_int8"])


def _onnx_int8(source: Path, target: Path, x: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            import onnx

            name = onnx.load(str(source)).graph.input[0].name
            self.items = iter([{name: x[i:i + 1]} for i in range(16)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(source), str(target), Reader(), per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def _tflite(model, example, x: np.ndarray, fp32: Path, int8: Path) -> None:
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    litert_torch.convert(model, example).export(str(fp32))
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
    for i in range(16):
        prepared(torch.from_numpy(x[i:i + 1]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, example,
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(int8))
