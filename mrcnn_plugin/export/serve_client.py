"""Driving mrcnn_serve from Python: start it on a free loopback port, wait until it is ready,
send requests, read its metrics, stop it. Used by the service tests and its load benchmark
(scripts/bench_serve.py); a production client needs nothing more than HTTP."""
import http.client
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Tuple

__all__ = ["free_port", "request", "ServeProcess"]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes = b"", content_type: str = "image/png",
            timeout: float = 120) -> Tuple[int, Dict[str, str], bytes]:
    """(status, headers, body) of one request to 127.0.0.1:port on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": content_type} if method == "POST" else {}
        conn.request(method, path, body=body if method == "POST" else None, headers=headers)
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


class ServeProcess:
    """A running mrcnn_serve on a free port, ready (its /readyz answered 200) when the
    constructor returns; RuntimeError with the service's output if it exits or is not ready
    within ready_timeout seconds."""

    def __init__(self, binary: Path, model: Path, *flags: str, ready_timeout: float = 180):
        self.port = free_port()
        self.proc = subprocess.Popen([str(binary), "--model", str(model), "--port", str(self.port), *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mrcnn_serve exited with status {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                if request(self.port, "GET", "/readyz", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        raise RuntimeError(f"mrcnn_serve did not become ready in {ready_timeout:.0f} s: {self.proc.stdout.read()}")

    def metrics(self) -> Dict[str, float]:
        """/metrics as {series with its labels: value}."""
        status, _, body = request(self.port, "GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics answered {status}")
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                values[key] = float(value)
        return values

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM (the service drains what it accepted), then its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)
