"""The default thread count: the idle cores, so a run on a busy machine does not spin-wait."""

from __future__ import annotations

import pytest
import torch

from mmrobust import threads
from mmrobust.threads import busy_cores, idle_cores, set_threads


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 1.2, 1), (2, 2.3, 1), (2, 7.0, 1), (8, 3.0, 5), (1, 0.0, 1)],
)
def test_idle_cores_are_cores_minus_the_load(cores: int, load: float, expected: int) -> None:
    assert idle_cores(cores, load) == expected


@pytest.fixture
def restore_threads():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_explicit_threads_win(restore_threads, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert set_threads(1) == 1 == torch.get_num_threads()


def test_omp_num_threads_is_respected(restore_threads, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr("mmrobust.threads.idle_cores", lambda: 99)
    assert set_threads(None) == 1


def test_default_is_the_idle_cores(restore_threads, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("mmrobust.threads.idle_cores", lambda: 1)
    assert set_threads(None) == 1 == torch.get_num_threads()


def test_busy_cores_come_from_the_cpu_time_counters(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # over the interval, 400 of 400 jiffies on 2 CPUs passed with 100 idle: 1.5 cores busy
    readings = iter([(1_000, 5_000, 2), (1_100, 5_400, 2)])
    monkeypatch.setattr(threads, "_cpu_times", lambda stat: next(readings))
    assert busy_cores(interval=0.0) == pytest.approx(1.5)


def test_cpu_times_read_a_proc_stat_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 5 80 5 0 0 0 0 0\ncpu0 5 0 2 40 3 0 0 0 0 0\ncpu1 5 0 3 40 2 0 0 0 0 0\nintr 1\n")
    assert threads._cpu_times(str(stat)) == (85, 100, 2)
    assert threads._cpu_times(str(tmp_path / "missing")) is None
    assert busy_cores(stat=str(tmp_path / "missing")) is None  # then the load average decides
