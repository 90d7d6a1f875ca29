"""ExposureRepository contract: counters add up per key (upsert-increment), reads filter by campaign
and hour, retention deletes whole hours past the limit, and ``opentime db copy`` tables include them."""

from __future__ import annotations

import pytest

from app.decisions.exposure import Exposure
from app.reports.recorder import ExposureRecorder
from app.store.base import HOUR_S, ExposureCount, Store
from app.store.tables import TABLES
from tests.contract.conftest import NOW

pytestmark = pytest.mark.anyio

HOUR = int(NOW // HOUR_S) * HOUR_S  # 2024-05-01T10:00:00Z


def counter(
    variant: str = "a",
    *,
    hour: int = HOUR,
    event: str = "open",
    recorded: int = 1,
    weight: float = 1.0,
    campaign: str = "demo",
    experiment: str = "subject-test",
) -> ExposureCount:
    return ExposureCount(
        campaign, "hello", variant, experiment, "direct", "ok", "list", event, hour, recorded, weight
    )


async def test_counts_add_up_per_counter_across_flushes(store: Store) -> None:
    await store.exposures.add(
        [counter("a", recorded=3, weight=6.0), counter("b"), counter("a", event="click")]
    )
    await store.exposures.add(
        [counter("a", recorded=2, weight=4.0), counter("a", event="click", recorded=4, weight=4.0)]
    )
    rows = await store.exposures.read("demo", None, None)
    assert sorted(rows) == sorted(
        [
            counter("a", recorded=5, weight=10.0),
            counter("a", event="click", recorded=5, weight=5.0),
            counter("b"),
        ]
    )


async def test_the_same_counter_twice_in_one_call_adds_up(store: Store) -> None:
    await store.exposures.add([counter("a", recorded=2, weight=2.0), counter("a", recorded=3, weight=3.0)])
    assert await store.exposures.read("demo", None, None) == [counter("a", recorded=5, weight=5.0)]


async def test_reads_are_one_campaign_and_hours_in_range(store: Store) -> None:
    hours = [HOUR - HOUR_S, HOUR, HOUR + HOUR_S]
    await store.exposures.add([counter(hour=h) for h in hours] + [counter(campaign="other")])
    assert [r.hour for r in await store.exposures.read("demo", HOUR, None)] == hours[1:]
    assert [r.hour for r in await store.exposures.read("demo", None, HOUR)] == hours[:1]
    # An hour that starts within the range counts; one that started before "since" does not.
    assert [r.hour for r in await store.exposures.read("demo", HOUR - 1, HOUR + 1)] == [HOUR]
    assert [r.campaign for r in await store.exposures.read("other", None, None)] == ["other"]
    assert await store.exposures.read("nobody", None, None) == []


async def test_no_experiment_is_stored_as_empty_text(store: Store) -> None:
    await store.exposures.add([counter(experiment="")])
    assert (await store.exposures.read("demo", None, None))[0].experiment == ""


async def test_retention_deletes_hours_wholly_past_the_limit_in_batches(store: Store) -> None:
    await store.exposures.add([counter(v, hour=HOUR - 2 * HOUR_S) for v in "abc"] + [counter(hour=HOUR)])
    # The 08:00 hour ends at 09:00: past a 09:00 limit; the 10:00 hour is not.
    assert await store.privacy.expire("exposures", HOUR - HOUR_S, 2) == 2
    assert await store.privacy.expire("exposures", HOUR - HOUR_S, 2) == 1
    assert await store.privacy.expire("exposures", HOUR - HOUR_S, 2) == 0
    assert await store.exposures.read("demo", None, None) == [counter(hour=HOUR)]
    assert await store.privacy.expire("exposures", HOUR + HOUR_S - 1, 10) == 0  # not wholly past yet


async def test_counters_copy_through_the_table_transfer(store: Store) -> None:
    rows = [counter("a", recorded=2, weight=4.0), counter("b", event="click")]
    await store.exposures.add(rows)
    assert await store.transfer.count("exposures") == 2
    read = await store.transfer.read("exposures", None, 10)
    assert [row[0] for row in read] == sorted(r.key for r in rows)
    assert all(len(row) == len(TABLES["exposures"]) for row in read)
    await store.transfer.write("exposures", read)  # replaced, not added up: a copy is not a flush
    assert sorted(await store.exposures.read("demo", None, None)) == sorted(rows)


async def test_a_recorder_flush_adds_exposures_up_per_hour_and_weights_sampled_opens(store: Store) -> None:
    def seen(variant: str, event: str, at: float, experiment: str | None = "subject-test") -> Exposure:
        return Exposure("demo", "hello", variant, experiment, "direct", "ok", "list", event, at)  # type: ignore[arg-type]

    recorder = ExposureRecorder(capacity=100, sample_rate=0.5, rng=lambda: 0.0)  # keeps every open
    for at in (HOUR + 1, HOUR + 1800, HOUR + 3599, HOUR + 3600):
        recorder.record(seen("a", "open", at))
    recorder.record(seen("a", "click", HOUR + 10))
    recorder.record(seen("b", "open", HOUR + 20, experiment=None))
    assert await recorder.flush(store.exposures) == 4
    recorder.record(seen("a", "open", HOUR + 5))
    assert await recorder.flush(store.exposures) == 1
    assert sorted(await store.exposures.read("demo", None, None)) == sorted(
        [
            counter("a", recorded=4, weight=8.0),  # three in the first flush, one in the second; each 1/0.5
            counter("a", hour=HOUR + HOUR_S, recorded=1, weight=2.0),
            counter("a", event="click", recorded=1, weight=1.0),  # clicks are never sampled: weight 1
            counter("b", experiment="", recorded=1, weight=2.0),
        ]
    )
    assert recorder.buffered == 0 and recorder.stats.flushed_rows == 5
