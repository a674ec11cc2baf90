"""examples/aiohttp_service.py runs with one command, serves /timers and /metrics, and exits 0
on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import aiotimer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "aiohttp_service.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_the_example_serves_timers_and_metrics_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(Path(aiotimer.__file__).parent.parent)}
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 20
        while True:  # until it listens and the 100 ms timer has run a few times
            try:
                status = json.loads(get(f"{base}/timers"))
                (worker,) = status["services"]["aiotimer.process"]["workers"]["slow-work"]
                worker_timers = (worker["stats"] or {"timers": {}})["timers"]
                worker_runs = worker_timers.get("slow-work", {"runs": 0})["runs"]
                if status["timers"]["sample-rate"]["runs"] >= 3 and worker_runs >= 1:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "the example did not serve in 20 s"
            time.sleep(0.05)
        assert status["scheduler"] == "aiohttp_service"
        assert status["state"] == "running"
        assert set(status["timers"]) == {"sample-rate", "forget-old-paths"}

        families = list(text_string_to_metric_families(get(f"{base}/metrics")))
        samples = {
            (sample.name, sample.labels.get("timer")) for f in families for sample in f.samples
        }
        worker_labels = {"scheduler": "aiohttp_service", "worker": "slow-work[0]"}
        worker_runs = [
            sample.value
            for f in families
            for sample in f.samples
            if sample.name == "aiotimer_runs_total"
            and sample.labels == {**worker_labels, "timer": "slow-work"}
        ]
        assert worker_runs, "the worker's timer is not in /metrics"
        assert worker_runs[0] >= 1
        for name in (
            "aiotimer_runs_total",
            "aiotimer_missed_total",
            "aiotimer_errors_total",
            "aiotimer_lateness_seconds_bucket",
            "aiotimer_duration_seconds_bucket",
        ):
            assert (name, "sample-rate") in samples, name
        assert json.loads(get(f"{base}/"))["requests"] >= 2

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        log = stderr.read_text()
        assert "Traceback" not in log
        assert "Task was destroyed" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
