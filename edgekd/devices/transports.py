"""How edgekd reaches a device: the `Transport` protocol and its Local, Ssh and Adb forms.

Every transport calls the system tools (`ssh` / `scp`, `adb -s SERIAL`), so the user's own
configuration applies: ~/.ssh/config, agent, ProxyJump, known_hosts, adb keys and server. ssh
is given only the options edgekd needs to run unattended (BatchMode, timeouts, its control
socket) and those the profile sets: user, port, host-key policy not set there come from the
user's ssh config. Commands are given as argument lists and quoted here with `shlex`, never
pasted into a shell string; every ssh, scp and adb shell / push / pull call ends its options
with `--`, and profiles refuse hosts, users, serials and device paths starting with `-`, so
names and paths can neither inject commands nor be read as options. Failures of the link
itself raise `DeviceError(kind="infrastructure")` with a `reason` saying which (unreachable,
auth, host_key, offline, disconnected, timeout).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Protocol

from edgekd.devices.errors import DeviceError
from edgekd.devices.profiles import DeviceProfile

Completed = subprocess.CompletedProcess


class Transport(Protocol):
    """Copy files to and from a device and run commands on it."""

    def connect(self) -> None:
        """Check the device answers and accepts us; DeviceError(infrastructure) if not."""

    def push(self, local: Path, remote: str) -> None:
        """Copy a workstation file to a path on the device."""

    def run(self, argv: list[str], timeout: float) -> Completed:
        """Run a command on the device; its exit status, stdout and stderr come back."""

    def pull(self, remote: str, local: Path) -> None:
        """Copy a device file to the workstation."""

    def close(self) -> None:
        """Release connections and sockets."""


def open_transport(device: DeviceProfile) -> Transport:
    """The transport a profile names."""
    if device.transport == "ssh":
        return Ssh(device)
    if device.transport == "adb":
        return Adb(device)
    return Local(device)


def _run(argv: list[str], timeout: float, what: str, **kwargs) -> Completed:
    """subprocess.run that turns a missing tool or a timeout into an infrastructure error."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              errors="replace", **kwargs)
    except FileNotFoundError:
        raise DeviceError(f"{argv[0]} is not installed on this workstation", "infrastructure",
                          "setup") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{what}: timed out after {timeout:.0f} s", "infrastructure",
                          "timeout") from None


class Local:
    """This workstation: files are copied into a local folder and run in fresh processes."""

    def __init__(self, device: DeviceProfile):
        self.device = device

    def connect(self) -> None:
        pass

    def push(self, local: Path, remote: str) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)

    def run(self, argv: list[str], timeout: float) -> Completed:
        return _run(argv, timeout, f"local {argv[0]}", stdin=subprocess.DEVNULL)

    def pull(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def close(self) -> None:
        pass


# ssh's own messages, as OpenSSH prints them, mapped to a reason.
SSH_FAILURES = (
    ("Host key verification failed", "host_key"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "host_key"),
    ("No ED25519 host key is known", "host_key"),
    ("Permission denied", "auth"),
    ("Too many authentication failures", "auth"),
    ("Could not resolve hostname", "unreachable"),
    ("Connection refused", "unreachable"),
    ("No route to host", "unreachable"),
    ("Network is unreachable", "unreachable"),
    ("Connection timed out", "unreachable"),
    ("Operation timed out", "unreachable"),
    ("closed by remote host", "disconnected"),
    ("Connection reset", "disconnected"),
    ("Broken pipe", "disconnected"),
    ("Connection closed", "disconnected"),
    ("Timeout, server", "disconnected"),
)
SSH_ADVICE = {
    "host_key": "the host key is not in known_hosts (connect once with ssh to check and accept "
                "it, or set allow_unknown_host_key: true)",
    "auth": "authentication refused (check the key: identity_file, ssh-agent, ~/.ssh/config)",
    "unreachable": "host unreachable",
    "disconnected": "connection lost",
}


def classify_ssh(stderr: str) -> str:
    """The reason ssh failed, from its stderr."""
    for needle, reason in SSH_FAILURES:
        if needle.lower() in stderr.lower():
            return reason
    return "unreachable"


class Ssh:
    """The system ssh / scp with BatchMode and a ControlMaster socket (and a connect timeout
    and keep-alives where the user's ssh config has none).

    The master connection is opened by `connect()` with `-f -N` and stderr sent to a file: a
    master forked by ControlPersist from a command with piped stderr would keep that pipe open.
    """

    def __init__(self, device: DeviceProfile):
        self.device = device
        self.control_dir = Path(tempfile.mkdtemp(prefix="edgekd-ssh-"))
        self._user_config: dict[str, str] | None = None

    def _effective_config(self) -> dict[str, str]:
        """The user's ssh settings for this host (`ssh -G`: reads the config files, connects
        to nothing), lower-case key -> value; empty when ssh cannot say."""
        config = ["-F", str(self.device.ssh_config)] if self.device.ssh_config else []
        try:
            proc = subprocess.run(["ssh", *config, "-G", "--", self.device.host],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        pairs = (line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
        return {key.lower(): value.strip() for key, value in pairs}

    def options(self) -> list[str]:
        """ssh options: what edgekd needs, then only what the profile sets (an option given
        here would override the user's ssh config). The connect timeout and keep-alives are
        edgekd's defaults only where the user's ssh config for this host sets none."""
        d = self.device
        opts = ["-o", "BatchMode=yes", "-o", f"ControlPath={self.control_dir}/%C"]
        if self._user_config is None:
            self._user_config = self._effective_config()
        if self._user_config.get("connecttimeout", "none") == "none":
            opts += ["-o", f"ConnectTimeout={max(1, round(d.connect_timeout_s))}"]
        if self._user_config.get("serveraliveinterval", "0") == "0":
            opts += ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if d.allow_unknown_host_key is not None:
            opts += ["-o", "StrictHostKeyChecking="
                     + ("accept-new" if d.allow_unknown_host_key else "yes")]
        if d.ssh_config:
            opts = ["-F", str(d.ssh_config), *opts]
        if d.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={d.known_hosts}"]
        if d.identity_file:
            opts += ["-i", str(d.identity_file), "-o", "IdentitiesOnly=yes"]
        if d.user:
            opts += ["-o", f"User={d.user}"]
        if d.port:
            opts += ["-o", f"Port={d.port}"]
        return opts

    def _fail(self, what: str, stderr: str) -> DeviceError:
        reason = classify_ssh(stderr)
        advice = SSH_ADVICE[reason]
        if "HAS CHANGED" in stderr:
            advice = ("the host key CHANGED since it was recorded in known_hosts (check why; "
                      "`ssh-keygen -R HOST` removes the old one)")
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
        return DeviceError(f"ssh {self.device.address}: {what}: {advice} ({detail})",
                           "infrastructure", reason)

    def connect(self) -> None:
        check = _run(["ssh", *self.options(), "-O", "check", "--", self.device.host], 10,
                     "ssh check")
        if check.returncode == 0:
            return
        with tempfile.TemporaryFile(mode="w+") as log:
            argv = ["ssh", *self.options(), "-o", "ControlMaster=yes", "-o",
                    "ControlPersist=120", "-f", "-N", "--", self.device.host]
            try:
                code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=log, timeout=self.device.connect_timeout_s + 20
                                      ).returncode
            except subprocess.TimeoutExpired:
                raise DeviceError(f"ssh {self.device.address}: no answer within "
                                  f"{self.device.connect_timeout_s:.0f} s", "infrastructure",
                                  "timeout") from None
            log.seek(0)
            if code != 0:
                raise self._fail("connect", log.read())

    def run(self, argv: list[str], timeout: float) -> Completed:
        # With `--` before the host, ssh reads no options after it either.
        proc = _run(["ssh", *self.options(), "-o", "ControlMaster=no", "--", self.device.host,
                     shlex.join(argv)], timeout, f"ssh {self.device.address}: {argv[0]}",
                    stdin=subprocess.DEVNULL)
        if proc.returncode == 255:  # ssh's own failure; the remote command's status otherwise
            raise self._fail(f"running {argv[0]}", proc.stderr)
        return proc

    def _scp(self, src: str, dst: str, what: str) -> None:
        proc = _run(["scp", "-q", *self.options(), "-o", "ControlMaster=no", "--", src, dst],
                    self.device.timeout_s, f"scp {self.device.address}")
        if proc.returncode != 0:
            if "No such file" in proc.stderr or "Permission denied" in proc.stderr and \
                    "publickey" not in proc.stderr:
                raise DeviceError(f"scp {self.device.address}: {what}: {proc.stderr.strip()}",
                                  "infrastructure", "setup")
            raise self._fail(what, proc.stderr)

    def push(self, local: Path, remote: str) -> None:
        self._scp(str(local), f"{self._scp_host()}:{remote}", f"copying {local.name} to device")

    def pull(self, remote: str, local: Path) -> None:
        self._scp(f"{self._scp_host()}:{remote}", str(local), f"copying {remote} back")

    def _scp_host(self) -> str:
        host = self.device.host or ""
        return f"[{host}]" if ":" in host else host

    def close(self) -> None:
        if self.control_dir.exists():
            subprocess.run(["ssh", *self.options(), "-O", "exit", "--", self.device.host or ""],
                           capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
            shutil.rmtree(self.control_dir, ignore_errors=True)


# adb's own messages mapped to a reason.
ADB_FAILURES = (
    ("unauthorized", "auth"),
    ("failed to authenticate", "auth"),
    ("offline", "offline"),
    ("not found", "unreachable"),
    ("no devices", "unreachable"),
    ("cannot connect", "unreachable"),
    ("unable to connect", "unreachable"),
    ("failed to connect", "unreachable"),
    ("connection refused", "unreachable"),
    ("closed", "disconnected"),
    ("protocol fault", "disconnected"),
    ("connection reset", "disconnected"),
)
ADB_ADVICE = {
    "auth": "device unauthorized (accept this computer's key on the device's USB debugging "
            "prompt)",
    "offline": "device offline",
    "unreachable": "device not found",
    "disconnected": "connection lost",
}
# States the server reports while it is still shaking hands with a device it just found.
ADB_SETTLING = ("connecting", "authorizing", "offline", "not found")


def classify_adb(text: str) -> str:
    for needle, reason in ADB_FAILURES:
        if needle in text.lower():
            return reason
    return "disconnected"


STATUS_MARK = "edgekd-status="


def _strip_status(text: str) -> str:
    return re.sub(rf"^{STATUS_MARK}\d+\n?", "", text, flags=re.M)


class Adb:
    """The system `adb -s SERIAL`; a host:port serial is connected first (`adb connect`).

    `adb shell`, `push` and `pull` take `--` before their operands (adb reads a leading `-`
    as an option); `adb connect` takes exactly one operand and no options."""

    def __init__(self, device: DeviceProfile):
        self.device = device
        self.serial = str(device.serial)

    def _adb(self, args: list[str], timeout: float, what: str) -> Completed:
        return _run(["adb", "-s", self.serial, *args], timeout, f"adb {self.serial}: {what}",
                    stdin=subprocess.DEVNULL)

    def _fail(self, what: str, text: str) -> DeviceError:
        reason = classify_adb(text)
        detail = text.strip().splitlines()[-1] if text.strip() else "no message"
        return DeviceError(f"adb {self.serial}: {what}: {ADB_ADVICE[reason]} ({detail})",
                           "infrastructure", reason)

    def state(self) -> str:
        """`device`, `offline`, `unauthorized`, ... or the error adb printed."""
        proc = self._adb(["get-state"], 10, "get-state")
        return proc.stdout.strip() if proc.returncode == 0 else proc.stderr.strip()

    def connect(self) -> None:
        if ":" in self.serial:
            # `adb connect` exits 0 even when it fails; get-state below tells the truth.
            _run(["adb", "connect", self.serial], self.device.connect_timeout_s + 10,
                 f"adb connect {self.serial}")
        deadline = time.monotonic() + self.device.connect_timeout_s
        state = self.state()
        while state != "device" and time.monotonic() < deadline and \
                any(s in state for s in ADB_SETTLING):
            time.sleep(0.25)
            state = self.state()
        if state != "device":
            raise self._fail("connect", state)

    def run(self, argv: list[str], timeout: float) -> Completed:
        # The command echoes its own status: without shell_v2 `adb shell` always exits 0, and
        # a connection lost mid-command can also end in status 0 with no output at all.
        command = f"{shlex.join(argv)}; echo {STATUS_MARK}$? >&2"
        proc = self._adb(["shell", "--", command], timeout, argv[0])
        if proc.returncode != 0 and proc.stderr.startswith(("error:", "adb: error")):
            raise self._fail(f"running {argv[0]}", proc.stderr)
        out, err, status = _strip_status(proc.stdout), _strip_status(proc.stderr), None
        for text in (proc.stderr, proc.stdout):  # stderr is merged into stdout without v2
            found = re.findall(rf"^{STATUS_MARK}(\d+)$", text, re.M)
            status = int(found[-1]) if found else status
        if status is None:
            raise DeviceError(f"adb {self.serial}: running {argv[0]}: connection lost before "
                              "the command finished", "infrastructure", "disconnected")
        return Completed(proc.args, status, out, err)

    def push(self, local: Path, remote: str) -> None:
        proc = self._adb(["push", "--", str(local), remote], self.device.timeout_s, "push")
        if proc.returncode != 0:
            raise self._fail(f"copying {local.name} to device", proc.stderr + proc.stdout)

    def pull(self, remote: str, local: Path) -> None:
        proc = self._adb(["pull", "--", remote, str(local)], self.device.timeout_s, "pull")
        if proc.returncode != 0:
            text = proc.stderr + proc.stdout
            if "No such file" in text or "does not exist" in text:
                raise DeviceError(f"adb {self.serial}: {remote} not found on the device",
                                  "model")
            raise self._fail(f"copying {remote} back", text)

    def close(self) -> None:
        pass
