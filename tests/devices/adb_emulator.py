"""An Android device as the real `adb` server sees it over TCP (`adb connect 127.0.0.1:PORT`).

It speaks the device side of the ADB protocol (AOSP protocol.txt, SYNC.TXT, SERVICES.TXT):
24-byte little-endian headers, CNXN with a `device::...;features=shell_v2,cmd` banner, RSA
AUTH (tokens are really verified against the keys it trusts, a refused key leaves the device
`unauthorized`), OPEN / OKAY / WRTE / CLSE streams with one WRTE in flight per stream,
`shell,v2,raw:CMD` with shell_v2 packets (stdout, stderr, exit status), plain `shell:CMD`
for devices without shell_v2, and the sync service (STAT, SEND + DATA + DONE, RECV, QUIT).

Commands run with `sh -c` on this machine; device paths are this machine's paths.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import subprocess
import threading
from pathlib import Path

A_SYNC, A_CNXN, A_OPEN, A_OKAY = 0x434E5953, 0x4E584E43, 0x4E45504F, 0x59414B4F
A_CLSE, A_WRTE, A_AUTH = 0x45534C43, 0x45545257, 0x48545541
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
SYNC_DATA_MAX = 64 * 1024
# PKCS#1 v1.5 DigestInfo prefix for SHA-1: adb signs the 20-byte token as if it were a digest.
SHA1_PREFIX = bytes.fromhex("3021300906052b0e03021a05000414")
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 0, 1, 2, 3, 4


def parse_adb_public_key(text: str) -> tuple[int, int]:
    """(modulus, exponent) from an adbkey.pub line: base64 of Android's RSAPublicKey struct
    (u32 words, u32 n0inv, u32 n[words], u32 rr[words], u32 exponent), then ` user@host`."""
    blob = base64.b64decode(text.strip().split()[0])
    words = struct.unpack_from("<I", blob, 0)[0]
    n = int.from_bytes(blob[8:8 + 4 * words], "little")
    e = struct.unpack_from("<I", blob, 8 + 8 * words)[0]
    return n, e


def signature_matches(token: bytes, signature: bytes, key: tuple[int, int]) -> bool:
    n, e = key
    size = (n.bit_length() + 7) // 8
    if len(signature) != size:
        return False
    message = pow(int.from_bytes(signature, "big"), e, n).to_bytes(size, "big")
    digest_info = SHA1_PREFIX + token
    expected = b"\x00\x01" + b"\xff" * (size - 3 - len(digest_info)) + b"\x00" + digest_info
    return message == expected


class Stream:
    """One OPEN'd service: writes wait for the host's OKAY, reads get the host's WRTEs."""

    def __init__(self, conn: Connection, local: int, remote: int):
        self.conn, self.local, self.remote = conn, local, remote
        self.acked = threading.Semaphore(0)
        self.inbox: list[bytes] = []
        self.has_data = threading.Condition()
        self.closed = False
        self.process: subprocess.Popen | None = None

    def write(self, data: bytes) -> None:
        size = self.conn.max_payload
        for start in range(0, len(data), size):
            if self.closed:
                raise ConnectionError("stream closed")
            self.conn.send(A_WRTE, self.local, self.remote, data[start:start + size])
            while not self.acked.acquire(timeout=0.5):
                if self.closed:
                    raise ConnectionError("stream closed")

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes of what the host wrote, or ConnectionError."""
        with self.has_data:
            while sum(map(len, self.inbox)) < size:
                if self.closed:
                    raise ConnectionError("stream closed")
                self.has_data.wait(0.5)
            data = b"".join(self.inbox)
            self.inbox = [data[size:]] if len(data) > size else []
            return data[:size]

    def received(self, data: bytes) -> None:
        with self.has_data:
            self.inbox.append(data)
            self.has_data.notify_all()

    def close(self, tell_host: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if self.process and self.process.poll() is None:
            self.process.kill()
        with self.has_data:
            self.has_data.notify_all()
        if tell_host:
            self.conn.send(A_CLSE, self.local, self.remote, b"", quiet=True)
        self.conn.streams.pop(self.local, None)


class Connection:
    """One TCP connection from the adb server."""

    def __init__(self, device: AdbDevice, sock: socket.socket):
        self.device, self.sock = device, sock
        self.lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.max_payload = 4096
        self.online = False
        self.token = b""

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes = b"", quiet: bool = False):
        header = struct.pack("<6I", cmd, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF,
                             cmd ^ 0xFFFFFFFF)
        try:
            with self.lock:
                self.sock.sendall(header + data)
        except OSError:
            if not quiet:
                raise

    def recv_exact(self, size: int) -> bytes:
        chunks = b""
        while len(chunks) < size:
            part = self.sock.recv(size - len(chunks))
            if not part:
                raise ConnectionError("host closed the connection")
            chunks += part
        return chunks

    def serve(self) -> None:
        try:
            while True:
                cmd, arg0, arg1, length, _, magic = struct.unpack("<6I", self.recv_exact(24))
                if magic != cmd ^ 0xFFFFFFFF:
                    raise ConnectionError("bad magic")
                self.handle(cmd, arg0, arg1, self.recv_exact(length) if length else b"")
        except (OSError, ConnectionError, struct.error):
            pass
        finally:
            self.drop()

    def drop(self) -> None:
        for stream in list(self.streams.values()):
            stream.close(tell_host=False)
        try:
            self.sock.close()
        except OSError:
            pass

    def handle(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == A_CNXN:
            self.max_payload = min(arg1, MAX_PAYLOAD)
            self.greet()
        elif cmd == A_AUTH:
            self.authenticate(arg0, data)
        elif not self.online:
            return  # nothing but CNXN / AUTH before the host is authorized
        elif cmd == A_OPEN:
            self.open(arg0, data.rstrip(b"\0").decode())
        elif cmd == A_OKAY and arg1 in self.streams:
            self.streams[arg1].acked.release()
        elif cmd == A_WRTE and arg1 in self.streams:
            self.send(A_OKAY, arg1, arg0)
            self.streams[arg1].received(data)
        elif cmd == A_CLSE and arg1 in self.streams:
            self.streams[arg1].close(tell_host=False)

    def greet(self) -> None:
        if self.device.secure:
            self.token = os.urandom(20)
            self.send(A_AUTH, AUTH_TOKEN, 0, self.token)
        else:
            self.go_online()

    def go_online(self) -> None:
        self.online = True
        self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner().encode())

    def authenticate(self, kind: int, data: bytes) -> None:
        if kind == AUTH_SIGNATURE:
            if any(signature_matches(self.token, data, key) for key in self.device.keys()):
                self.go_online()
                return
            self.token = os.urandom(20)  # ask the host to try its next key
            self.send(A_AUTH, AUTH_TOKEN, 0, self.token)
        elif kind == AUTH_RSAPUBLICKEY:
            # A real phone now shows "Allow USB debugging?"; this one answers as configured.
            if self.device.accept_new_keys:
                self.device.trust(data.rstrip(b"\0").decode())
                self.go_online()

    def open(self, remote: int, service: str) -> None:
        local, self.next_id = self.next_id, self.next_id + 1
        stream = Stream(self, local, remote)
        handler = self.device.service_handler(service)
        if handler is None:
            self.send(A_CLSE, 0, remote)
            return
        self.streams[local] = stream
        self.send(A_OKAY, local, remote)
        threading.Thread(target=self._serve_stream, args=(handler, stream, service),
                         daemon=True).start()

    def _serve_stream(self, handler, stream: Stream, service: str) -> None:
        try:
            handler(stream, service)
        except (ConnectionError, OSError):
            pass
        finally:
            stream.close()


class AdbDevice:
    """The emulated device: listen on 127.0.0.1, serve every connection the adb server makes.

    secure: ask for RSA auth; `authorized_keys` are adbkey.pub lines it trusts;
    accept_new_keys: answer the "Allow USB debugging?" prompt with yes.
    """

    def __init__(self, *, secure: bool = False, authorized_keys: tuple[str, ...] = (),
                 accept_new_keys: bool = False, features: str = "shell_v2,cmd",
                 model: str = "EdgekdEmulator", env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.secure, self.accept_new_keys, self.features = secure, accept_new_keys, features
        self.model, self.env, self.cwd = model, env, cwd
        self._keys = [parse_adb_public_key(k) for k in authorized_keys]
        self.connections: list[Connection] = []
        self.commands: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.serial = f"127.0.0.1:{self.port}"
        self.refusing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def banner(self) -> str:
        return (f"device::ro.product.name=edgekd;ro.product.model={self.model};"
                f"ro.product.device=edgekd;features={self.features}")

    def keys(self) -> list[tuple[int, int]]:
        return list(self._keys)

    def trust(self, public_key: str) -> None:
        self._keys.append(parse_adb_public_key(public_key))

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            if self.refusing:
                sock.close()
                continue
            conn = Connection(self, sock)
            self.connections.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def disconnect(self, refuse: bool = False) -> None:
        """Drop every connection (a cable pulled, Wi-Fi lost); `refuse` keeps new ones out
        until `refusing` is set back to False."""
        self.refusing = refuse
        for conn in self.connections:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.drop()
        self.connections.clear()

    def close(self) -> None:
        self.disconnect()
        self.server.close()

    def service_handler(self, service: str):
        if service.startswith("shell,") or service.startswith("shell:"):
            v2 = service.startswith("shell,") and "v2" in service.split(":", 1)[0].split(",")
            if v2 and "shell_v2" not in self.features.split(","):
                return None
            return self._shell_v2 if v2 else self._shell_v1
        if service == "sync:":
            return self._sync
        return None

    # -- shell ---------------------------------------------------------------------------
    def _spawn(self, stream: Stream, service: str, merge: bool) -> subprocess.Popen:
        command = service.split(":", 1)[1]
        self.commands.append(command)
        stream.process = subprocess.Popen(
            ["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE, cwd=self.cwd,
            env={**os.environ, **(self.env or {})})
        return stream.process

    def _shell_v2(self, stream: Stream, service: str) -> None:
        proc = self._spawn(stream, service, merge=False)
        threading.Thread(target=self._stdin_v2, args=(stream, proc), daemon=True).start()
        pumps = [threading.Thread(target=self._pump, args=(stream, pipe, packet_id), daemon=True)
                 for pipe, packet_id in ((proc.stdout, SHELL_STDOUT), (proc.stderr, SHELL_STDERR))]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()
        code = proc.wait()
        stream.write(struct.pack("<BI", SHELL_EXIT, 1) + bytes([code & 0xFF]))

    def _stdin_v2(self, stream: Stream, proc: subprocess.Popen) -> None:
        try:
            while True:
                packet_id, length = struct.unpack("<BI", stream.read(5))
                data = stream.read(length) if length else b""
                if packet_id == SHELL_STDIN:
                    proc.stdin.write(data)
                    proc.stdin.flush()
                elif packet_id == SHELL_CLOSE_STDIN:
                    proc.stdin.close()
        except (ConnectionError, OSError, ValueError):
            pass

    def _pump(self, stream: Stream, pipe, packet_id: int) -> None:
        lock = getattr(stream, "pump_lock", None) or threading.Lock()
        stream.pump_lock = lock
        try:
            for chunk in iter(lambda: pipe.read1(32 * 1024), b""):
                with lock:  # stdout and stderr packets must not interleave mid-WRTE
                    stream.write(struct.pack("<BI", packet_id, len(chunk)) + chunk)
        except (ConnectionError, OSError):
            pass  # the host went away: the process is killed by Stream.close

    def _shell_v1(self, stream: Stream, service: str) -> None:
        proc = self._spawn(stream, service, merge=True)
        proc.stdin.close()
        for chunk in iter(lambda: proc.stdout.read1(32 * 1024), b""):
            stream.write(chunk)
        proc.wait()  # the exit status is lost: devices without shell_v2 do not report it

    # -- sync ----------------------------------------------------------------------------
    def _sync(self, stream: Stream, service: str) -> None:
        while True:
            request, length = struct.unpack("<4sI", stream.read(8))
            if request == b"QUIT":
                return
            if request == b"DONE":  # a stray end marker
                continue
            path = stream.read(length).decode()
            if request == b"STAT":
                stream.write(self._stat(path))
            elif request == b"LIST":
                stream.write(b"DONE" + bytes(16))
            elif request == b"SEND":
                self._receive_file(stream, path)
            elif request == b"RECV":
                self._send_file(stream, path)
            else:
                self._fail(stream, f"unknown sync request {request!r}")

    def _stat(self, path: str) -> bytes:
        try:
            st = os.stat(path)
        except OSError:
            return b"STAT" + bytes(12)
        return b"STAT" + struct.pack("<3I", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF,
                                     int(st.st_mtime))

    def _receive_file(self, stream: Stream, spec: str) -> None:
        path, _, mode = spec.rpartition(",")
        chunks, error = [], None
        while True:
            request, length = struct.unpack("<4sI", stream.read(8))
            if request == b"DATA":
                if length > SYNC_DATA_MAX:
                    error = f"DATA chunk of {length} bytes is over {SYNC_DATA_MAX}"
                chunks.append(stream.read(length))
            elif request == b"DONE":
                break
            else:
                self._fail(stream, f"unexpected {request!r} in SEND")
                return
        if error is None:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_bytes(b"".join(chunks))
                os.chmod(path, int(mode or "420") & 0o7777)  # decimal st_mode
            except OSError as exc:
                error = f"{path}: {exc.strerror}"
        if error:
            self._fail(stream, error)
        else:
            stream.write(b"OKAY" + bytes(4))

    def _send_file(self, stream: Stream, path: str) -> None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            self._fail(stream, f"{path}: {exc.strerror}")
            return
        for start in range(0, len(data), SYNC_DATA_MAX):
            chunk = data[start:start + SYNC_DATA_MAX]
            stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        stream.write(b"DONE" + bytes(4))

    @staticmethod
    def _fail(stream: Stream, message: str) -> None:
        stream.write(b"FAIL" + struct.pack("<I", len(message)) + message.encode())

