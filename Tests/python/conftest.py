"""Starts the real `spool serve` for the tests: a temp SQLite file, a free loopback port, tokens."""
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ADMIN = "test-admin-secret"
CLIENT = "test-client-secret"  # tenant acme: enqueue + read
WORKER = "test-worker-secret"  # tenant acme: worker
OTHER = "test-other-secret"  # tenant globex: enqueue + read
TOKENS = f"{ADMIN}:ops:admin,{CLIENT}:acme:enqueue+read,{WORKER}:acme:worker,{OTHER}:globex:enqueue+read"


def skip_or_fail(reason: str):
    """Locally a missing tool skips (loudly); under CI=true nothing may be skipped."""
    if CI:
        pytest.fail(f"{reason} (CI=true: not skipping)")
    pytest.skip(f"!!! NOT TESTED: {reason}")


@dataclass
class Server:
    url: str
    log: pathlib.Path

    def headers(self, secret: str = ADMIN) -> dict:
        return {"Authorization": f"Bearer {secret}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spool_binary() -> pathlib.Path:
    """The `spool` binary under test: $SPOOL_BIN, or the debug build."""
    binary = pathlib.Path(os.environ.get("SPOOL_BIN", ROOT / ".build/debug/spool"))
    if not binary.is_absolute():
        binary = ROOT / binary
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no spool binary at {binary}: run `swift build` or set SPOOL_BIN")
    return binary


@contextlib.contextmanager
def spool_server(workdir: pathlib.Path, port: int = 0, extra_args=(), tokens: str | None = TOKENS):
    """`spool serve` on `workdir/spool.sqlite` (kept between runs on one workdir), on `port`
    (a free one when 0), with `tokens` (SPOOL_TOKENS; None: token-less, loopback only), until
    the block ends (SIGTERM)."""
    binary = spool_binary()
    port = port or free_port()
    args = [str(binary), "serve", "--database", str(workdir / "spool.sqlite"),
            "--host", "127.0.0.1", "--port", str(port), "--grace-seconds", "1", *extra_args]
    # Demo kinds are opt-in once tokens are configured (in builds that have the flag).
    if "--demo-jobs" in subprocess.run([binary, "serve", "--help"], capture_output=True, text=True).stdout:
        args.append("--demo-jobs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
    if tokens:
        env["SPOOL_TOKENS"] = tokens
    log = workdir / "spool.log"
    with open(log, "ab") as out:
        # cwd: the temp dir, so that no ./spool.yaml of the developer's is read.
        proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"spool serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"spool serve did not answer /healthz in 30 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            warnings.warn(f"spool serve did not stop within 15 s of SIGTERM and was killed (log: {log})")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    with spool_server(tmp_path_factory.mktemp("spool")) as s:
        yield s
