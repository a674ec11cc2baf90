"""``aiotimer cluster URL`` prints a cluster's live nodes and each timer's last runs, read from
its store, with the URL's password masked and store failures as one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from cluster_stores import store_url, unique_cluster

from aiotimer.cli import main
from aiotimer.cluster import Outcome, RunOutcome, open_store

T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z


def _populate(url: str, cluster: str) -> None:
    async def populate() -> None:
        store = open_store(url, cluster)
        await store.open()
        await store.heartbeat("web-1", 30)
        await store.heartbeat("web-2", 30)
        for k in range(5):
            await store.claim("web-1", [("purge", T0 + k * 60_000), ("report", T0 + k * 60_000)])
        await store.finish("web-1", [RunOutcome("purge", T0 + 240_000, Outcome.OK, 2_500_000)])
        await store.finish("web-1", [RunOutcome("report", T0 + 180_000, Outcome.ERROR, 1_000)])
        await store.close()

    anyio.run(populate)


def test_the_report_lists_live_nodes_and_each_timers_last_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite://{tmp_path / 'claims.db'}"
    _populate(url, "svc")
    assert main(["cluster", url, "--name", "svc", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"cluster 'svc' on {url}" in out
    assert "live nodes (2):" in out
    lines = out.splitlines()
    purge = [line.split("  ") for line in lines if line.startswith("purge ")]
    report = [line for line in lines if line.startswith("report ")]
    assert len(purge) == 2  # --runs 2
    assert len(report) == 2
    assert (
        "2027-01-15T08:04:00.000Z"
        in lines[lines.index(next(x for x in lines if x.startswith("purge ")))]
    )
    assert any("ok" in line and "2.5 ms" in line for line in lines if line.startswith("purge "))
    assert any("claimed, not finished" in line for line in report)


def test_another_cluster_name_shows_nothing_of_this_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite://{tmp_path / 'claims.db'}"
    _populate(url, "svc")
    assert main(["cluster", url, "--name", "other"]) == 0
    out = capsys.readouterr().out
    assert "live nodes: none" in out
    assert "runs: none recorded" in out


def test_the_password_of_the_url_is_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store_url("postgres", tmp_path)  # trust auth: any password is accepted
    secret_url = url.replace("postgres@", "postgres:s3cr3t@", 1)
    assert main(["cluster", secret_url, "--name", unique_cluster("cli")]) == 0
    captured = capsys.readouterr()
    assert "s3cr3t" not in captured.out + captured.err
    assert "postgres:***@" in captured.out


def test_an_unreachable_store_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["cluster", "redis://:s3cr3t@127.0.0.1:1/0", "--timeout", "0.5"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("aiotimer: error: redis://:***@127.0.0.1:1/0")
    assert "Traceback" not in captured.err
    assert "s3cr3t" not in captured.err


@pytest.mark.slow
def test_the_live_status_shows_each_cluster_service(tmp_path: Path) -> None:
    import aiotimer
    from aiotimer.cli import cluster_lines
    from aiotimer.cluster import Cluster

    async def run() -> list[str]:
        scheduler = aiotimer.Scheduler(name="a")
        scheduler.add_every_ms(50, lambda: None, name="job", cluster=True)
        scheduler.add_service(
            Cluster(f"sqlite://{tmp_path / 'c.db'}", name="svc", node="a", heartbeat_s=0.05)
        )
        async with scheduler:
            await anyio.sleep(0.3)
            return cluster_lines(scheduler.stats().as_dict())

    [line] = anyio.run(run)
    assert line.startswith("cluster 'svc' as a · 1 live node(s) · won ")
    assert int(line.split("won ")[1].split()[0]) >= 1
    assert "elsewhere 0 · store errors 0 · claim p50 " in line
    assert "REFUSING" not in line
