"""The model card's measured section reads the evaluate summary's extras under ``details``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.card import metrics_table
from models.evaluate import evaluate_path


def test_metrics_table_reads_details_and_records_written_before_them(
    fake_model: Path, tiny_data: Path
) -> None:
    summary: dict[str, Any] = evaluate_path(fake_model, tiny_data, "test").summary()
    table = metrics_table({"tiny/test": summary})
    assert "| tiny/test | garbage | 0.695 | 0.635 | 0.250 | 0.500 | 2 | 3 |" in table
    assert table[-1] == (
        "False positives per image without objects (at the operating thresholds): "
        "tiny/test 1.000 over 1 images."
    )
    flat = {k: v for k, v in summary.items() if k != "details"} | summary["details"]
    assert metrics_table({"tiny/test": flat}) == table
