"""Adding up the metrics of several worker processes: snapshot files, the merge, the scrape."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings
from app.demo import recipient_id
from app.metrics import SUMMED_GAUGES
from app.security.tokens import TokenSigner
from app.worker_metrics import (
    STALE_AFTER_S,
    WORKER_METRICS_ENV,
    Family,
    Snapshot,
    WorkerShare,
    decode,
    encode,
    folder_from_env,
    merge,
    publishing,
)
from tests.conftest import BASE_URL, SENDER

NOW = 1_800_000_000.0
OK = ("opentime_open_responses_total", (("kind", "list"), ("outcome", "ok")))
MALFORMED = ("opentime_open_responses_total", (("kind", "list"), ("outcome", "token-malformed")))
BYTES = ("opentime_cache_bytes", (("cache", "lists"),))
FAILURES = ("opentime_upstream_breaker_failures", ())


def worker_families(ok: float, *, malformed: float = 0.0, cache_bytes: float = 0.0) -> list[Family]:
    samples = {OK: ok, **({MALFORMED: malformed} if malformed else {})}
    return [
        Family("opentime_open_responses", "counter", "Open-time responses by outcome.", samples),
        Family(
            "opentime_data_age_seconds",
            "histogram",
            "Age.",
            {
                ("opentime_data_age_seconds_bucket", (("kind", "list"), ("le", "1.0"))): ok,
                ("opentime_data_age_seconds_bucket", (("kind", "list"), ("le", "+Inf"))): ok,
                ("opentime_data_age_seconds_count", (("kind", "list"),)): ok,
                ("opentime_data_age_seconds_sum", (("kind", "list"),)): ok / 2,
            },
        ),
        Family("opentime_cache_bytes", "gauge", "Bytes.", {BYTES: cache_bytes}),
        Family("opentime_upstream_breaker_failures", "gauge", "Failures.", {FAILURES: ok}),
    ]


def snapshot(worker: int, families: list[Family], *, age: float = 0.5, final: bool = False) -> Snapshot:
    return Snapshot(worker, NOW - age, final, families)


def merged(
    own: list[Family], *others: Snapshot
) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    result = merge(own, 1, others, now=NOW, summed_gauges=SUMMED_GAUGES)
    return {family.name: family.samples for family in result}


def test_counters_and_histograms_are_summed_over_workers() -> None:
    result = merged(worker_families(3), snapshot(2, worker_families(4, malformed=2)))
    assert result["opentime_open_responses"] == {OK: 7, MALFORMED: 2}  # a label set only one worker saw too
    age = result["opentime_data_age_seconds"]
    assert age[("opentime_data_age_seconds_bucket", (("kind", "list"), ("le", "+Inf")))] == 7
    assert age[("opentime_data_age_seconds_sum", (("kind", "list"),))] == 3.5


def test_a_gone_worker_still_counts_so_totals_never_go_backwards() -> None:
    # uvicorn replaced worker 2 (stopped cleanly: final) and worker 3 (killed: its snapshot went stale).
    gone = snapshot(2, worker_families(5), final=True)
    killed = snapshot(3, worker_families(6), age=STALE_AFTER_S + 60)
    assert merged(worker_families(1), gone, killed)["opentime_open_responses"][OK] == 12


def test_memory_gauges_are_summed_over_live_workers_only() -> None:
    live = snapshot(2, worker_families(0, cache_bytes=300))
    gone = snapshot(3, worker_families(0, cache_bytes=5000), final=True)
    stale = snapshot(4, worker_families(0, cache_bytes=7000), age=STALE_AFTER_S + 1)
    assert merged(worker_families(0, cache_bytes=100), live, gone, stale)["opentime_cache_bytes"] == {
        BYTES: 400
    }


def test_other_gauges_are_shown_per_live_worker() -> None:
    # One breaker per process: the sum of two workers' consecutive failures means nothing.
    result = merged(
        worker_families(2), snapshot(7, worker_families(5)), snapshot(8, worker_families(9), final=True)
    )
    assert result["opentime_upstream_breaker_failures"] == {
        ("opentime_upstream_breaker_failures", (("worker", "1"),)): 2,
        ("opentime_upstream_breaker_failures", (("worker", "7"),)): 5,
    }


def test_snapshot_round_trips_through_its_file_format() -> None:
    original = snapshot(42, worker_families(3, malformed=1, cache_bytes=10))
    assert decode(encode(original)) == original


def test_share_reads_the_other_workers_files_not_its_own(tmp_path: Path) -> None:
    mine, theirs = WorkerShare(tmp_path, worker=1), WorkerShare(tmp_path, worker=2)
    mine.write(snapshot(1, worker_families(1)))
    theirs.write(snapshot(2, worker_families(2)))
    (tmp_path / "worker-3-0000.json").write_bytes(b"{not json")  # skipped with a warning, not a crash
    assert [s.worker for s in mine.read_others()] == [2]
    assert not list(tmp_path.glob("*.tmp"))  # written by rename


def test_a_replacement_with_a_reused_pid_keeps_the_old_file(tmp_path: Path) -> None:
    WorkerShare(tmp_path, worker=5).write(snapshot(5, worker_families(4), final=True))
    WorkerShare(tmp_path, worker=5).write(snapshot(5, worker_families(1)))
    assert sorted(s.families[0].samples[OK] for s in WorkerShare(tmp_path, worker=9).read_others()) == [1, 4]


def test_the_folder_comes_from_the_environment() -> None:
    assert folder_from_env({WORKER_METRICS_ENV: "/run/x"}) == Path("/run/x")
    assert folder_from_env({}) is None


def test_publishing_writes_snapshots_while_running_and_a_final_one(tmp_path: Path) -> None:
    share = WorkerShare(tmp_path, worker=3)
    counts = {"ok": 0.0}

    async def run() -> tuple[Snapshot, Snapshot]:
        async with publishing(share, lambda: worker_families(counts["ok"]), time.time, interval_s=0.05):
            counts["ok"] = 2
            await asyncio.sleep(0.2)
            during = decode(share.path.read_bytes())
            counts["ok"] = 5
        return during, decode(share.path.read_bytes())

    during, last = asyncio.run(run())
    assert (during.final, during.families[0].samples[OK]) == (False, 2)
    assert (last.final, last.families[0].samples[OK]) == (True, 5)


def test_scrape_adds_the_other_workers_snapshots(
    settings: Settings, signer: TokenSigner, tmp_path: Path
) -> None:
    folder = tmp_path / "workers"
    folder.mkdir()
    other = WorkerShare(folder, worker=999_999)
    other.write(Snapshot(999_999, time.time(), False, worker_families(4, cache_bytes=1000)))
    token = signer.sign("demo", recipient_id(3), now=int(time.time()))
    with TestClient(create_app(settings, worker_metrics_dir=folder), base_url=BASE_URL) as client:
        assert (
            client.get(f"/v1/{token}/list/picks.json", headers={"AMP-Email-Sender": SENDER}).status_code
            == 200
        )
        text = client.get("/metrics").text
        assert 'opentime_open_responses_total{kind="list",outcome="ok"} 5.0' in text
        assert 'opentime_data_age_seconds_count{kind="list"} 5.0' in text
        own_bytes = re.search(r'opentime_cache_bytes\{cache="lists"\} (\S+)', text)
        assert own_bytes is not None and float(own_bytes.group(1)) > 1000  # its own entry plus the other's
        assert len(list(folder.glob("worker-*.json"))) == 2  # this worker published its own snapshot
    assert decode(next(p for p in folder.glob("worker-*.json") if p != other.path).read_bytes()).final
