"""Real peers on loopback for the device tests: an OpenSSH server with throwaway keys, a
private adb server with the device emulator of adb_emulator.py (the tiny models they run are
tests/conftest.py's `models`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
