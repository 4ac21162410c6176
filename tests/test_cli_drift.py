"""`drift` commands (cli/drift.py): profile a job's input, keep a baseline, check another input against it."""

from __future__ import annotations

import random
from pathlib import Path

from click.testing import CliRunner, Result

from mapreduce_llm.cli import Library, cli
from mapreduce_llm.monitoring.profiles import read_profiles
from tests.conftest import PROMPTS, SUMMARIZE
from tests.fake_embeddings import FakeEmbedder

PYTHON = ["python", "function", "class", "module", "list", "dict", "import", "loop", "exception", "variable"]
LEGAL = ["license", "copyright", "warranty", "liability", "clause", "party", "agreement", "terms", "notice", "damages"]


def _folder(root: Path, vocabulary: list[str], n: int, seed: int) -> Path:
    rng = random.Random(seed)
    root.mkdir()
    for i in range(n):
        sentences = [" ".join(rng.choices(vocabulary, k=12)).capitalize() + "." for _ in range(40)]
        (root / f"doc{i}.txt").write_text(" ".join(sentences))
    return root


def _drift(tmp_path: Path, *args: str, embedder: FakeEmbedder | None = None) -> Result:
    env = {"MAPREDUCE_LLM_PROMPTS": str(PROMPTS), "MAPREDUCE_LLM_BASELINES": str(tmp_path / "baselines")}
    library = Library(embedder=lambda: embedder or FakeEmbedder())
    return CliRunner().invoke(cli, ["drift", *args], obj=library, env=env)


def test_profile_then_baseline_then_check(tmp_path: Path) -> None:
    """`profile` embeds each planned document with the library's embedder; `baseline` keeps the reference;
    `check` scores a job against it: its own input is not an alert, another kind of text is (exit status 2)."""
    inputs = {
        "week1": _folder(tmp_path / "in1", PYTHON, 30, seed=1),
        "legal": _folder(tmp_path / "in2", LEGAL, 30, seed=2),
    }
    embedder = FakeEmbedder()
    for name, folder in inputs.items():
        args = ["profile", "--input", str(folder), "--output", str(tmp_path / name), "--max-model-len", "1024"]
        profiled = _drift(tmp_path, *args, embedder=embedder)
        assert profiled.exit_code == 0, profiled.output
        assert profiled.output.startswith("30 documents profiled (0 errors): ")
        assert len(read_profiles(tmp_path / name)) == 30
    assert embedder.calls  # the library's embedder, not all-MiniLM-L6-v2

    made = _drift(tmp_path, "baseline", "--results", str(tmp_path / "week1"), "--name", "v1")
    assert made.exit_code == 0, made.output
    assert made.output.splitlines()[0].startswith(f"summarize@{SUMMARIZE}: 30 documents, 30 chunks, ")
    assert (tmp_path / "baselines" / "v1.json").is_file()

    lowered = ["--min-documents", "20", "--min-chunks", "20"]  # the default 40 would withhold 30 documents
    same = _drift(tmp_path, "check", "--results", str(tmp_path / "week1"), "--baseline", "v1", *lowered)
    assert same.exit_code == 0 and "alert" not in same.output
    lines = [line.split()[:3] for line in same.output.splitlines()]
    assert ["drift", f"summarize@{SUMMARIZE}", "embedding_centroid"] in lines
    other = _drift(tmp_path, "check", "--results", str(tmp_path / "legal"), "--baseline", "v1", *lowered)
    centroid = next(line.split() for line in other.output.splitlines() if "embedding_centroid" in line)
    assert other.exit_code == 2 and centroid[-1] == "alert"


def test_check_says_when_no_version_is_in_the_baseline(tmp_path: Path) -> None:
    """A job whose task@version the baseline lacks gets a line saying so, and exit status 0."""
    folder = _folder(tmp_path / "in", PYTHON, 3, seed=1)
    for out, prompt in (("a", "summarize@1.0.0"), ("b", "qa@1.0.0")):
        args = ["profile", "--input", str(folder), "--output", str(tmp_path / out), "--prompt", prompt]
        assert _drift(tmp_path, *args, "--set", "engine.max_model_len=1024").exit_code == 0
    assert _drift(tmp_path, "baseline", "--results", str(tmp_path / "a"), "--name", "v1").exit_code == 0
    checked = _drift(tmp_path, "check", "--results", str(tmp_path / "b"), "--baseline", "v1")
    assert checked.exit_code == 0 and checked.output == "no task@version of the job is in the baseline\n"


def test_a_folder_without_profiles_or_a_missing_baseline_is_explained(tmp_path: Path) -> None:
    """`baseline` on a folder without profile.jsonl, or `check` against an unknown baseline, says what to do."""
    made = _drift(tmp_path, "baseline", "--name", "x", "--results", str(tmp_path))
    assert made.exit_code == 1 and "profile.jsonl does not exist" in str(made.exception)
    checked = _drift(tmp_path, "check", "--baseline", "x", "--results", str(tmp_path))
    assert checked.exit_code == 1 and "create it with `mapreduce-llm drift baseline" in str(checked.exception)


def test_check_withholds_a_small_sample_unless_the_minimum_is_lowered(tmp_path: Path) -> None:
    """`check` on 3 documents against a 30-document baseline prints `insufficient` with the counts (exit 0);
    with --min-documents 3 --min-chunks 3 it prints the scores and the MMD p-value. `baseline` says when a
    baseline itself is under the default minimum (40)."""
    embedder = FakeEmbedder()
    for name, n in (("week1", 30), ("few", 3)):
        folder = _folder(tmp_path / f"in-{name}", PYTHON, n, seed=n)
        args = ["profile", "--input", str(folder), "--output", str(tmp_path / name), "--max-model-len", "1024"]
        assert _drift(tmp_path, *args, embedder=embedder).exit_code == 0
    made = _drift(tmp_path, "baseline", "--results", str(tmp_path / "week1"), "--name", "v1")
    assert "chunk vectors of 30 documents for the MMD test" in made.output
    assert "under the default drift minimum (40 documents, 40 chunks)" in made.output

    withheld = _drift(tmp_path, "check", "--results", str(tmp_path / "few"), "--baseline", "v1")
    assert withheld.exit_code == 0, withheld.output
    assert withheld.output.split()[:3] == ["drift", f"summarize@{SUMMARIZE}", "insufficient:"]
    assert "the job has 3 documents, the job has 3 chunks, the baseline has 30 documents" in withheld.output
    lowered = ["--min-documents", "3", "--min-chunks", "3"]
    scored = _drift(tmp_path, "check", "--results", str(tmp_path / "few"), "--baseline", "v1", *lowered)
    signals = [line.split()[2] for line in scored.output.splitlines()]
    assert "embedding_centroid" in signals and "mmd_p_value" in signals and "insufficient:" not in signals
