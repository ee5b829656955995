"""Chance level: recorded by the audit, stated in the report, marked in the heatmap."""

from __future__ import annotations

import torch

import mmrobust
from mmrobust.audit.report import heatmap_figure, pyplot
from mmrobust.audit.result import chance_level


def test_chance_is_the_best_constant_answer() -> None:
    assert chance_level(torch.tensor([0, 1, 1, 1, 2]), "classification") == {"accuracy": 0.6}
    mae = chance_level(torch.tensor([1.0, 2.0, 10.0]), "regression")["mae"]
    assert abs(mae - (1 + 0 + 8) / 3) < 1e-9  # |x − median| with median 2


def test_the_report_and_heatmap_mark_scores_at_chance(small_data, fit_small, tmp_path) -> None:
    method = fit_small(small_data, "joint", "sum")
    result = mmrobust.audit(method, small_data)
    test = small_data.split("test").target
    expected = float(torch.bincount(test).max()) / len(test)
    assert result.chance() == {"synthetic": expected}
    mmrobust.write_report(result, tmp_path)
    assert f"{expected:.3f} (synthetic)" in (tmp_path / "report.md").read_text()
    assert mmrobust.AuditResult.read(tmp_path / "results.json").chance() == {"synthetic": expected}
    # a model scoring exactly chance on a subset gets its cell marked
    table = result.table.copy()
    table.loc[(table.scenario == "subset[m1]") & (table.metric == "accuracy"), "value"] = expected
    marked = mmrobust.AuditResult(table, result.task, result.scenarios, result.models)
    fig = heatmap_figure(marked)
    texts = [t.get_text() for t in fig.axes[0].texts]
    pyplot().close(fig)
    assert f"{expected:.2f}*" in texts and sum(t.endswith("*") for t in texts) >= 1
    assert not any(t.endswith("*") for t in texts if float(t.rstrip("*")) > expected + 0.01)
