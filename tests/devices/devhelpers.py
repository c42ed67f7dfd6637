"""Helpers the device tests import by name (a module name of its own: every test folder has
a conftest.py, so `from conftest import ...` would pick whichever was imported first)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).parent
BIN = HERE / "bin"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Sshd:
    """A real OpenSSH server on 127.0.0.1 with a throwaway host key and client key."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = root / "host_ed25519"
        self.client_key = root / "client_ed25519"
        self.other_key = root / "other_ed25519"
        for key in (self.host_key, self.client_key, self.other_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekd-test",
                                "-f", str(key)], check=True)
        (root / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        self.known_hosts = root / "known_hosts"
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config = root / "sshd_config"
        path = f"{BIN}:/usr/local/bin:/usr/bin:/bin"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "UsePAM no", "StrictModes no",
            "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp",
            f"SetEnv PATH={path}", "MaxStartups 50", ""]))
        self.proc: subprocess.Popen | None = None

    def start(self) -> Sshd:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        subprocess.run([SSHD, "-t", "-f", str(self.config)], check=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E",
                                      str(self.root / "sshd.log")])
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        """Kill the server and every connection it serves (not the commands they run)."""
        if self.proc is None:
            return
        for pid in descendants(self.proc.pid):
            if process_name(pid).startswith("sshd"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def profile(self, tmp: Path, **fields) -> Path:
        """A device profile YAML for this server (trusted host key, the right client key)."""
        doc = {"name": "loopback-ssh", "transport": "ssh", "host": "127.0.0.1",
               "port": self.port, "user": os.environ.get("USER", "root"),
               "identity_file": str(self.client_key), "known_hosts": str(self.known_hosts),
               "python": sys.executable, "work_dir": str(tmp / "device-work"),
               "connect_timeout_s": 5, "retry_delay_s": 0.2, "timeout_s": 120, **fields}
        path = tmp / f"{doc['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path
