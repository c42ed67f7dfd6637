"""export with `validate_arch: arm64`: the int8 TFLite run by the arm64 build of its runtime
under qemu-user agrees with x86. Needs the emulation tools and the cached arm64 root
(edgekd.arch.sysroot prepares it once, with network)."""

import pytest
from stagekit import QAT, make_context, run_stage

from edgekd.config import ExportStage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def arm64_root():
    sysroot = pytest.importorskip("edgekd.arch.sysroot")
    missing = sysroot.missing_tools("arm64")
    if missing:
        pytest.skip(f"validate-arch needs {', '.join(missing)}: run `make test-deps` "
                    "(apt-get install qemu-user-static debootstrap)")
    try:
        return sysroot.ensure("arm64")
    except sysroot.PrepareError as exc:  # no network to fetch the root the first time
        pytest.skip(f"arm64 root could not be prepared: {exc}")


def test_export_validates_int8_tflite_on_emulated_arm64(arm64_root, distill, quantize,
                                                        splits, tmp_path):
    ctx = make_context(tmp_path, QAT, splits)  # its own run folder: the shared export's stays
    cfg = ExportStage(kind="export", formats=["tflite_int8"], validate_arch="arm64")
    result = run_stage("export", cfg, {"distill": distill, "quantize": quantize}, ctx)
    m = result.metrics
    assert result.evaluated == ["student_int8_tflite"]
    assert m["student_int8_tflite.arm64_top1_agreement"] >= 0.99
    assert m["student_int8_tflite.arm64_max_abs_diff"] >= 0.0
    assert result.warnings == []
    assert sorted(k for k in m if ".arm64_" in k) == [
        "student_int8_tflite.arm64_max_abs_diff", "student_int8_tflite.arm64_top1_agreement"]
