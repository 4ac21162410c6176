"""monitoring/dashboards.py: the Grafana dashboard built with the foundation SDK, and the JSON committed from it."""

from __future__ import annotations

import json
import re

from mapreduce_llm.prompts.evidence import LIVE_JOB
from monitoring import dashboards


def test_committed_json_is_what_the_generator_builds() -> None:
    """The committed dashboard JSON is exactly what monitoring/dashboards.py renders now (else it is stale)."""
    committed = dashboards.OUTPUT.read_text(encoding="utf-8")
    assert committed == dashboards.render(), (
        f"{dashboards.OUTPUT.relative_to(dashboards.OUTPUT.parents[3])} is stale: it differs from what "
        "monitoring/dashboards.py builds; run `make dashboards` and commit the result"
    )


def test_every_row_is_on_the_dashboard_in_order() -> None:
    """Each row function gives one row panel, followed by its own panels, in the order of ROWS."""
    panels = json.loads(dashboards.render())["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == [row().title for row in dashboards.ROWS]
    assert "Batch service" in rows


def test_panels_have_unique_ids_titles_and_ref_ids() -> None:
    """Panel ids run 1, 2, ... top to bottom; no two panels share a title; a panel's queries are A, B, ..."""
    panels = json.loads(dashboards.render())["panels"]
    assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
    titles = [p["title"] for p in panels if p["type"] != "row"]
    assert len(titles) == len(set(titles))
    for panel in panels:
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert refs == list("ABCDEFGH"[: len(refs)]), panel["title"]


def test_rollout_guard_panels_read_finished_jobs_only() -> None:
    """Every series a rollout-guard panel reads leaves out the live driver, as `prompts rollout --prometheus`
    does (a job that lingers after pushing would count twice)."""
    panels = json.loads(dashboards.render())["panels"]
    guard = [p for p in panels if p["title"].startswith("Rollout guard:")]
    assert len(guard) == 6
    for panel in guard:
        for target in panel["targets"]:
            selectors = re.findall(r"mapreduce_llm_\w+(\{[^}]*\})?", target["expr"])
            assert selectors and all(f'job!="{LIVE_JOB}"' in s for s in selectors), (panel["title"], target["expr"])
