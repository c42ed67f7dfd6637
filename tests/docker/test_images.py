"""The images built for real with buildah and exercised inside with `buildah run`.

Each image is built by docker/local/build.sh on a local stand-in for its base, made from
Debian's package registry (docker/local/base.sh), so every step of the Dockerfile itself runs:
package installs, pip installs, the user, the entrypoint. No container registry is needed.

- device-arm64: built for linux/arm64 with its RUN steps under qemu through binfmt; inside it
  the device runner profiles an int8 TFLite and an int8 ONNX file and gives the outputs of the
  x86 run (3 passed here: 85 s with the arm64 base cached, about 8 min cold).
  Part of `make test` (slow-marked; skipped with the reason where buildah, debootstrap or
  binfmt are missing or we are not root).
- workstation and jetson: an 8 GB image and a second arm64 build, run with
  EDGEKD_TEST_IMAGES=1 (`make images`) only.

Builds and runs use buildah's chroot isolation, as an OCI runtime cannot start containers on
every machine (on the one this was written on, setting RLIMIT_NOFILE is refused). Emulated
arm64 runs get the two fixes qemu 7.2 needs (docker/README.md, "arm64 validation"): an ARM
/proc/cpuinfo in place of the host's x86 one, which qemu 7.2 passes through and on which
ai-edge-litert and onnxruntime crash (see emulated_arm); and QEMU_CPU=cortex-a72, as qemu 7.2's
default CPU gives wrong int8 results.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgekd.devices.measure import RUNNER, last_json

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "docker" / "local"
HEAVY = "EDGEKD_TEST_IMAGES"
ARCH = {"workstation": "amd64", "device-arm64": "arm64", "jetson": "arm64"}
FLAVOUR = {"workstation": "python", "device-arm64": "python", "jetson": "jetpack"}
CPU = "cortex-a72"  # a Raspberry Pi 4's core; qemu 7.2's default `max` is wrong for int8


def image_test(opt_in: bool):
    """Marks for a test on a built image: slow, an hour's timeout, and for the heavy images
    (`opt_in`) a skip unless EDGEKD_TEST_IMAGES is set."""
    marks = [pytest.mark.slow, pytest.mark.timeout(3600)]
    marks += [pytest.mark.skipif(not os.environ.get(HEAVY), reason=f"a long image build: "
                                 f"`make images` runs it ({HEAVY}=1)")] if opt_in else []

    def apply(test):
        for mark in marks:
            test = mark(test)
        return test
    return apply


@dataclass(frozen=True)
class Built:
    """An image build.sh made."""

    tag: str
    arch: str
    seconds: int
    size: str
    oci: dict  # the image's OCI description: architecture, config (User, Entrypoint, Cmd...)

    @property
    def config(self) -> dict:
        return self.oci["config"]


def why_not(arch: str) -> str | None:
    """Why images cannot be built here, or None."""
    if os.geteuid() != 0:
        return "buildah's chroot isolation, debootstrap and binfmt need root"
    tools = ["buildah", "debootstrap"] + (["qemu-aarch64-static"] if arch == "arm64" else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (tests/system_deps.sh installs them as root)"
    if arch == "arm64":
        done = subprocess.run([str(LOCAL / "binfmt.sh")], capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            return f"cannot register qemu-aarch64 with binfmt_misc: {done.stderr.strip()}"
    return None


def reachable(host: str, port: int = 80) -> bool:
    try:
        socket.create_connection((host, port), timeout=10).close()
        return True
    except OSError:
        return False


def ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts, when it names one (a TLS-intercepting proxy
    between here and PyPI): builds and pip calls inside the images must trust it too."""
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    return Path(bundle) if bundle and Path(bundle).is_file() else None


def build(image: str, *options: str) -> subprocess.CompletedProcess:
    """Run build.sh for `image` (skipping the test where images cannot be built here)."""
    reason = why_not(ARCH[image])
    if reason:
        pytest.skip(reason)
    base = subprocess.run([str(LOCAL / "base.sh"), FLAVOUR[image], ARCH[image]],
                          capture_output=True, text=True, timeout=1800)
    if base.returncode != 0 and not reachable("deb.debian.org"):
        pytest.skip("no stand-in base and Debian's package registry is not reachable")
    assert base.returncode == 0, base.stderr[-3000:]
    bundle = ca_bundle()
    env = {"EDGEKD_CA_BUNDLE": str(bundle)} if bundle else {}
    return subprocess.run([str(LOCAL / "build.sh"), image, *options], capture_output=True,
                          text=True, timeout=3600, env={**env, **os.environ})


def built(image: str, done: subprocess.CompletedProcess) -> Built:
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    line = done.stdout.strip().splitlines()[-1]
    found = re.match(r"build\.sh: built (\S+) \((\w+)\) in (\d+) s, (.+), on ", line)
    assert found, line
    tag, arch, seconds, size = found.groups()
    oci = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", tag],
                                    capture_output=True, text=True, check=True).stdout)["OCIv1"]
    print(f"{image}: built in {seconds} s, {size}")  # shown by `make images` (pytest -rP)
    return Built(tag, arch, int(seconds), size, oci)


def running(name: str, *options: str) -> Iterator[tuple[Built, str]]:
    """Build image `name` (build.sh `options`) and yield it with a working container of it,
    removed afterwards: the body of each image's module fixture."""
    image = built(name, build(name, *options))
    cid = subprocess.run(["buildah", "from", "--pull=never", "--arch", image.arch, image.tag],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield image, cid
    finally:
        subprocess.run(["buildah", "rm", cid], capture_output=True)


def inside(cid: str, argv: list[str], user: str | None = None, env: dict | None = None,
           volumes: tuple[str, ...] = (), timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `argv` in the container (chroot isolation) as `user`, with HOST:PATH[:ro] volumes."""
    cmd = ["buildah", "run", "--isolation", "chroot"]
    cmd += ["--user", user] if user else []
    for name, value in (env or {}).items():
        cmd += ["--env", f"{name}={value}"]
    for volume in volumes:
        cmd += ["--volume", volume]
    return subprocess.run([*cmd, cid, "--", *argv], capture_output=True, text=True,
                          timeout=timeout)


def shared_dir(path: Path) -> Path:
    """A directory the image's non-root user can write to through a volume."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def emulated_arm(tmp: Path) -> tuple[dict[str, str], str]:
    """The environment and volume for an emulated arm64 run: a Raspberry Pi 4 core, and an
    ARM /proc/cpuinfo for it.

    buildah's chroot isolation binds the host's /proc and skips volumes under /proc/, so the
    file cannot be mounted over /proc/cpuinfo. qemu-user looks every path up in its prefix
    first (QEMU_LD_PREFIX, the -L of `edgekd validate-arch`, which uses the same cpuinfo text),
    so a prefix holding only proc/cpuinfo swaps that file (and what / and /proc list) and
    leaves every other path to the image.
    """
    from edgekd.arch.sysroot import cpuinfo, host_processors

    (tmp / "qemu-prefix" / "proc").mkdir(parents=True)
    (tmp / "qemu-prefix" / "proc" / "cpuinfo").write_text(
        cpuinfo("arm64", CPU, host_processors()))
    env = {"QEMU_CPU": CPU, "QEMU_LD_PREFIX": "/qemu-prefix"}
    return env, f"{tmp / 'qemu-prefix'}:/qemu-prefix:ro"


def runner_parity(cid: str, image: Built, models: dict[str, Path], name: str,
                  tmp: Path) -> None:
    """The image's entrypoint (the device runner) on `name` under emulation gives the x86
    run's outputs: same runtime, accuracy, top-1 (agreement 1.0) and logits."""
    work = shared_dir(tmp / "work")
    model, data = (Path(shutil.copy(models[key], work)) for key in (name, "data"))
    runs = ["--runs", "3", "--warmup", "1"]
    native = subprocess.run([sys.executable, str(RUNNER), str(model), *runs, "--data", str(data),
                             "--outputs", str(tmp / "x86.npy")], capture_output=True, text=True,
                            timeout=300)
    env, prefix = emulated_arm(tmp)
    emulated = inside(cid, [*image.config["Entrypoint"], f"/work/{model.name}", *runs,
                            "--data", f"/work/{data.name}", "--outputs", "/work/arm64.npy"],
                      user=image.config.get("User"), env=env,
                      volumes=(f"{work}:/work", prefix))
    docs = {"x86": last_json(native.stdout), "arm64": last_json(emulated.stdout)}
    assert docs["x86"] and docs["x86"]["ok"], native.stdout + native.stderr[-2000:]
    assert docs["arm64"] and docs["arm64"]["ok"], emulated.stdout + emulated.stderr[-2000:]
    assert docs["arm64"]["machine"] == "aarch64" and docs["x86"]["machine"] == "x86_64"
    assert docs["arm64"]["runtime"] == docs["x86"]["runtime"]
    assert docs["arm64"]["accuracy"] == docs["x86"]["accuracy"]
    x86, arm64 = np.load(tmp / "x86.npy"), np.load(work / "arm64.npy")
    assert (arm64.argmax(1) == x86.argmax(1)).mean() == 1.0
    np.testing.assert_allclose(arm64, x86, atol=1e-5)


def list_runtimes(cid: str, image: Built, user: str | None) -> dict:
    """The image's default command (the runner's --list-runtimes), through its entrypoint."""
    done = inside(cid, [*image.config["Entrypoint"], *image.config["Cmd"]], user=user)
    listed = last_json(done.stdout)
    assert done.returncode == 0 and listed, done.stdout + done.stderr[-2000:]
    return listed


# device-arm64 ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def device_image() -> Iterator[tuple[Built, str]]:
    yield from running("device-arm64")


@image_test(opt_in=False)
def test_device_image_is_arm64_and_its_user_sees_both_runtimes(device_image):
    image, cid = device_image
    assert image.oci["architecture"] == "arm64"
    assert image.config["User"] == "edgekd"
    listed = list_runtimes(cid, image, image.config["User"])
    assert listed["machine"] == "aarch64"
    assert {"ai_edge_litert", "onnxruntime"} <= set(listed["runtimes"])


@image_test(opt_in=False)
@pytest.mark.parametrize("name", ["tflite_int8", "onnx_int8"])
def test_device_image_runner_gives_the_x86_outputs(device_image, models, tmp_path, name):
    image, cid = device_image
    runner_parity(cid, image, models, name, tmp_path)


# workstation ----------------------------------------------------------------------------------

TINY = """\
name: tiny
seed: 1
teacher: {arch: cnn, width: 16, depth: 2, train: {epochs: 4, lr: 0.01}}
student: {arch: cnn, width: 8, depth: 2}
target: local
stages:
  - kind: distill
    epochs: 8
    budget: {min_accuracy: 0.70}
  - kind: quantize
    epochs: 1
    budget: {max_accuracy_drop: 0.05}
  - kind: export
    formats: [onnx_int8, tflite_int8]
    budget: {min_top1_agreement: 0.95, max_size: 2 MB}
  - kind: profile
    runs: 20
    warmup: 2
    budget: {max_latency_ms: {p90: 1 s}, max_peak_memory: 2 GB}
"""


@pytest.fixture(scope="module")
def workstation() -> Iterator[tuple[Built, str]]:
    yield from running("workstation")


@image_test(opt_in=True)
def test_workstation_command_pipelines_and_device_tools(workstation):
    image, cid = workstation
    user = image.config["User"]
    assert user == "edgekd"
    edgekd = image.config["Entrypoint"]
    done = inside(cid, [*edgekd, "--help"], user=user)
    assert done.returncode == 0 and "validate-arch" in done.stdout, done.stderr[-2000:]
    # Every shipped pipeline validates as it does here: those that need the user's own data
    # or weights (torchvision.yaml, timm.yaml, own_module.yaml) say which file is missing.
    for pipeline in sorted((ROOT / "pipelines").glob("*.yaml")):
        here = subprocess.run([sys.executable, "-m", "edgekd", "validate", str(pipeline)],
                              capture_output=True, text=True, timeout=120)
        there = inside(cid, [*edgekd, "validate", f"/opt/edgekd/pipelines/{pipeline.name}"],
                       user=user)
        assert there.returncode == here.returncode, (pipeline.name, there.stdout, there.stderr)
        said = [line.replace("/opt/edgekd", str(ROOT)) for line in
                (there.stdout + there.stderr).splitlines() if "subprocess exited" not in line
                and not line.startswith("Error: exit status")]  # buildah's own lines
        assert said == (here.stdout + here.stderr).splitlines(), pipeline.name
    for tool in (["adb", "version"], ["ssh", "-V"], ["scp"], ["qemu-aarch64-static", "--version"],
                 ["debootstrap", "--version"], ["fakeroot", "--version"], ["git", "--version"]):
        done = inside(cid, tool, user=user)
        out = done.stdout + done.stderr
        # scp without arguments prints its usage and exits 1; the others exit 0
        assert done.returncode == 0 or (tool == ["scp"] and "usage: scp" in out), (tool, out)
    done = inside(cid, ["pip", "check"], user=user)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def tiny_run(workstation, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    image, cid = workstation
    work = shared_dir(tmp_path_factory.mktemp("workstation") / "work")
    (work / "tiny.yaml").write_text(TINY)
    done = inside(cid, [*image.config["Entrypoint"], "run", "tiny.yaml"],
                  user=image.config["User"], volumes=(f"{work}:/work",), timeout=1800)
    return work, done


@image_test(opt_in=True)
def test_workstation_runs_a_pipeline_end_to_end(tiny_run):
    work, done = tiny_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads((work / "runs/tiny/report.json").read_text())
    assert report["verdict"] == "pass"
    assert all(s["status"] == "done" for s in report["stages"])
    names = {a["name"] for a in report["artifacts"]}
    assert {"student_int8_onnx", "student_int8_tflite"} <= names
    assert report["checks"] and all(c["passed"] for c in report["checks"])
    assert report["environment"]["packages"]["torch"]


@image_test(opt_in=True)
def test_workstation_validates_its_int8_model_on_emulated_arm64(workstation, tiny_run):
    """`edgekd validate-arch` inside the image as its non-root user: qemu-user with its own
    arm64 root under /cache (fakeroot debootstrap), no binfmt needed."""
    image, cid = workstation
    work, done = tiny_run
    assert done.returncode == 0, "the pipeline run failed (see the test above)"
    model = next((work / "runs/tiny").rglob("*int8*.tflite")).relative_to(work)
    data = next((work / "runs/tiny").rglob("test.npz"), None)
    args = [f"/work/{model}", "--arch", "arm64", "--json", "/work/arch.json"]
    args += ["--data", f"/work/{data.relative_to(work)}"] if data else []
    env, volumes = {}, [f"{work}:/work"]
    if ca_bundle():  # validate-arch downloads the arm64 wheels with pip
        env, volumes = {"PIP_CERT": "/etc/edgekd-ca.crt"}, [*volumes,
                                                            f"{ca_bundle()}:/etc/edgekd-ca.crt:ro"]
    done = inside(cid, [*image.config["Entrypoint"], "validate-arch", *args],
                  user=image.config["User"], env=env, volumes=tuple(volumes), timeout=1800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


# jetson ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jetson_image() -> Iterator[tuple[Built, str]]:
    yield from running("jetson", "--build-arg", "ONNXRUNTIME=cpu")


@image_test(opt_in=True)
def test_jetson_image_has_the_runtimes_and_trtexec_on_path(jetson_image):
    image, cid = jetson_image
    assert image.oci["architecture"] == "arm64"
    listed = list_runtimes(cid, image, image.config.get("User"))
    assert listed["machine"] == "aarch64"
    assert {"ai_edge_litert", "onnxruntime"} <= set(listed["runtimes"])
    done = inside(cid, ["trtexec", "--help"])
    assert done.returncode == 0 and done.stdout.startswith("&&&& RUNNING TensorRT.trtexec")
    done = inside(cid, ["readlink", "-f", "/usr/local/bin/trtexec"])
    assert done.stdout.strip() == "/usr/src/tensorrt/bin/trtexec"


@image_test(opt_in=True)
@pytest.mark.parametrize("name", ["tflite_int8", "onnx_int8"])
def test_jetson_image_runner_gives_the_x86_outputs(jetson_image, models, tmp_path, name):
    image, cid = jetson_image
    runner_parity(cid, image, models, name, tmp_path)


@image_test(opt_in=True)
def test_jetson_default_build_takes_onnxruntime_gpu_only_from_the_jetson_index():
    """The default build installs onnxruntime-gpu from the Jetson AI Lab index; where that
    index cannot give it (here: not reachable), the build stops with the message saying so."""
    done = build("jetson")
    out = done.stdout + done.stderr
    if done.returncode == 0:  # the index answered: the image must have the CUDA provider
        assert "onnxruntime providers:" in out and "CUDAExecutionProvider" in out
    else:
        assert "could not install onnxruntime-gpu from https://pypi.jetson-ai-lab.io/jp6/cu126" \
            in out, out[-3000:]
