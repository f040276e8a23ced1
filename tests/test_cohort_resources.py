"""benchmarks/cohort_resources.py's table: slow configs keep their digits, and the table of a
saved resources.json is the one the benchmark printed when it ran."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import cohort_resources  # noqa: E402

RESULTS = ROOT / "docs" / "results" / "cohort-2026-12-04" / "resources"


def test_a_3d_rate_under_one_image_a_second_keeps_three_digits():
    result = {"cache_bytes": 3 * 2**30, "cache_volumes": 37, "first_logged_step_s": 184.4, "wall_s": 815.1,
              "images_per_s": [{"step": 25, "images_per_s": 0.3676}, {"step": 50, "images_per_s": 0.4248},
                               {"step": 75, "images_per_s": 0.4056}],
              "peak_rss_bytes": 6 * 2**30, "processes_at_peak": 3}
    table = cohort_resources.markdown_table(result, 75).splitlines()
    assert "| first window | 0.368 images/s |" in table
    assert "| later windows | 0.406-0.425 images/s (median 0.425) |" in table
    assert "| start to the first logged step (step 25: preprocessing, compilation and the steps) | 184 s |" in table
    assert table[-1] == "| wall time | 815 s for 75 steps |"


def test_the_committed_tables_are_their_json_files_tables():
    for name in ("", "-3d", "-2d-rerun"):
        result = json.loads((RESULTS / f"resources{name}.json").read_text())
        assert cohort_resources.markdown_table(result, 100) + "\n" == (RESULTS / f"table{name}.md").read_text()
