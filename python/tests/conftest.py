"""Fixtures: a real sidecar process (node dist/cli.js serve) on a private Unix socket."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.path.join(REPO, "dist", "cli.js")
sys.path.insert(0, os.path.join(REPO, "python", "src"))

from sam_sidecar.client import FastLaneClient  # noqa: E402


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SidecarProcess:
    def __init__(self, socket_path, env=None):
        self.socket = socket_path
        self.env = env or {}
        self.process = None
        self.http_port = free_port()

    def stats(self):
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v1/stats", timeout=5) as response:
            return json.loads(response.read())

    def start(self, wait=True):
        env = dict(os.environ, SAM_SIDECAR_SOCKET=self.socket, SAM_SIDECAR_HTTP_PORT=str(self.http_port), SAM_SIDECAR_LOG_LEVEL="warn", **self.env)
        self.process = subprocess.Popen([shutil.which("node") or "node", CLI, "serve"], env=env, stdout=subprocess.DEVNULL)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20.0):
        client = FastLaneClient(self.socket, deadline_s=0.5, backoff_initial_s=0.0, backoff_max_s=0.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.process.returncode}")
            if client.ping():
                client.close()
                return
            time.sleep(0.05)
        raise RuntimeError("sidecar did not come up")

    def kill9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def socket_dir():
    path = tempfile.mkdtemp(prefix="sam-py-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sidecar(socket_dir):
    if not os.path.exists(CLI):
        pytest.skip("dist/cli.js is missing: run `npm run build` (npm test does)")
    process = SidecarProcess(os.path.join(socket_dir, "sidecar.sock")).start()
    yield process
    process.stop()


@pytest.fixture
def synthetic_traces(socket_dir):
    """Deterministic synthetic rollouts written by the project's own generator."""
    path = os.path.join(socket_dir, "synthetic.jsonl")
    subprocess.run([shutil.which("node") or "node", CLI, "synth", "--out", path, "--groups", "4", "--samples", "6"], check=True, stdout=subprocess.DEVNULL)
    return path
