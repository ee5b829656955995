"""The default thread count: the idle cores, so a run on a busy machine does not spin-wait."""

from __future__ import annotations

import pytest
import torch

from mmrobust.threads import idle_cores, set_threads


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
