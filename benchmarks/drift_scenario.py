"""A drift scenario you can rerun: every drift signal, for documents of the baseline's kind and of another
kind, at several sample sizes.

Corpora of paragraph-aligned pieces (lengths drawn from the same seeded distribution, so that only the *kind* of
text differs) from the example corpus (benchmarks/corpus/docs, Python 3.11 documentation) and the license texts
in /usr/share/common-licenses (GPL, Apache, MPL, ...):

- baseline ``python-docs``: 80 Python docs pieces spread over every source file;
- ``same-kind``: draws from the other Python docs pieces (193; never a baseline piece);
- ``shifted``: draws from the license pieces (84: the 80-document draws overlap).

Every piece is profiled once without an engine (plan + embed with all-MiniLM-L6-v2, as ``mapreduce-llm drift
profile`` does). For each sample size (5, 20, 40, 80 documents by default) and kind, ``--draws`` seeded draws are
scored against the baseline with the guard off, so that every signal is shown: the three PSIs, the centroid
distance and the MMD p-value (median and range over the draws, and in how many draws each crosses its alert
threshold), and whether the default guard (40 documents, 40 chunks per side) would have withheld them. Also
prints the embedding cost (chunks per second).

``--out`` also gets ``corpora/{baseline,heldout,different}`` (``--pieces`` documents each) for the README's
walkthrough, which runs real jobs on them.

    python benchmarks/drift_scenario.py [--out out/drift-scenario] [--sizes 5,20,40,80] [--draws 10] [--pieces 40]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "summarize@1.0.0"
"""The prompt version every walkthrough job plans with (pinned: the figures in README were measured with it)."""
DOCS = ROOT / "benchmarks" / "corpus" / "docs"
LICENSES = Path("/usr/share/common-licenses")


def pieces(texts: list[str], rng: random.Random, low: int = 800, high: int = 4000) -> list[str]:
    """Cut texts into paragraph-aligned pieces of a random target size between ``low`` and ``high`` chars."""
    out: list[str] = []
    for text in texts:
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        target, current = rng.randint(low, high), ""
        for para in paragraphs:
            current = f"{current}\n\n{para}" if current else para
            if len(current) >= target:
                out.append(current[: high + 2000])
                target, current = rng.randint(low, high), ""
    return out


def build_corpora(dest: Path, n: int = 40, seed: int = 7) -> dict[str, Path]:
    """Write the three corpora as folders of .md / .txt files under ``dest``; returns their folders."""
    rng = random.Random(seed)
    docs = pieces([p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))], rng)
    licenses = pieces(
        [p.read_text(encoding="utf-8", errors="replace") for p in sorted(LICENSES.iterdir()) if not p.is_symlink()],
        rng,
    )
    # Spread the picks over every source file; baseline and held-out alternate, so they never share a piece.
    step = max(1, len(docs) // (2 * n))
    picked = docs[::step]
    chosen = {
        "baseline": picked[0::2][:n],
        "heldout": picked[1::2][:n],
        "different": rng.sample(licenses, min(n, len(licenses))),
    }
    folders = {}
    for name, texts in chosen.items():
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        suffix = ".txt" if name == "different" else ".md"
        for i, text in enumerate(texts):
            (folder / f"{name}-{i:03d}{suffix}").write_text(text, encoding="utf-8")
        folders[name] = folder
    return folders


def _spread(total: int, n: int) -> set[int]:
    """``n`` indices (at most ``total``) evenly spread over ``range(total)``."""
    n = min(n, total)
    return {round(i * (total - 1) / max(1, n - 1)) for i in range(n)}


def build_pools(dest: Path, baseline: int = 80, same: int = 200, seed: int = 7) -> dict[str, Path]:
    """Folders ``baseline`` (``baseline`` Python docs pieces spread over every file), ``same-kind`` (up to
    ``same`` other Python docs pieces) and ``shifted`` (every license piece) under ``dest``."""
    rng = random.Random(seed)
    docs = pieces([p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))], rng)
    licenses = pieces(
        [p.read_text(encoding="utf-8", errors="replace") for p in sorted(LICENSES.iterdir()) if not p.is_symlink()],
        rng,
    )
    chosen = _spread(len(docs), baseline)
    rest = [d for i, d in enumerate(docs) if i not in chosen]
    texts = {
        "baseline": [docs[i] for i in sorted(chosen)],
        "same-kind": [rest[i] for i in sorted(_spread(len(rest), same))],
        "shifted": licenses,
    }
    folders = {}
    for name, group in texts.items():
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for i, text in enumerate(group):
            (folder / f"{name}-{i:03d}.txt").write_text(text, encoding="utf-8")
        folders[name] = folder
    return folders


SIGNAL_COLUMNS = ("document_length", "prompt_class", "retrieval_similarity", "embedding_centroid")


def _cell(values: list[float], alerts: int, digits: int = 2) -> str:
    """Median [min-max] of a signal over the draws, and how many draws crossed its alert threshold."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} [{low:.{digits}f}–{high:.{digits}f}] {alerts}/{len(values)}"


def main() -> None:
    from mapreduce_llm.config import JobSpec
    from mapreduce_llm.embeddings import Embedder
    from mapreduce_llm.errors import DocumentError
    from mapreduce_llm.monitoring.baselines import BaselineStore
    from mapreduce_llm.monitoring.drift import build_baseline, job_drift
    from mapreduce_llm.monitoring.profiles import DocumentProfile, profile_document, write_profiles
    from mapreduce_llm.monitoring.verdicts import DriftGuard, level, p_value_level
    from mapreduce_llm.runner import plan_job

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/drift-scenario"))
    parser.add_argument("--sizes", default="5,20,40,80", help="documents per draw, comma-separated")
    parser.add_argument("--draws", type=int, default=10, help="seeded draws per size and kind")
    parser.add_argument("--pieces", type=int, default=40, help="documents per walkthrough corpus")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    build_corpora(args.out / "corpora", args.pieces)
    folders = build_pools(args.out / "pools", baseline=80)
    embedder = Embedder()
    embedder.embed(["warm up"])  # load the model outside the timing
    profiles: dict[str, list[DocumentProfile]] = {}
    for name, folder in folders.items():
        spec = JobSpec.model_validate(
            {"input": folder, "output": args.out / name, "prompt": PROMPT, "prompts_dir": ROOT / "prompts"}
        )
        plans = list(plan_job(spec)[1])  # plan first: only the embedding is timed
        started = time.perf_counter()
        profiles[name] = [profile_document(p, embedder) for p in plans if not isinstance(p, DocumentError)]
        seconds = time.perf_counter() - started
        write_profiles(args.out / name, profiles[name])
        chunks = sum(len(p.map_prompt_tokens) for p in profiles[name])
        print(
            f"{name:10} {len(profiles[name]):3} documents {chunks:4} chunks  embedded in {seconds:5.1f} s "
            f"({chunks / seconds:5.1f} chunks/s)"
        )
    baseline = build_baseline("python-docs", profiles["baseline"], str(folders["baseline"]))
    ref = baseline.versions[PROMPT]
    saved = BaselineStore(args.out / "baselines").save(baseline)
    print(f"baseline python-docs: {ref.documents} documents, {ref.chunks} chunks: {saved}")

    guard, everything = DriftGuard(), DriftGuard(1, 1)
    print(
        f"\nEach cell: median [min–max] over {args.draws} seeded draws, then draws over the alert threshold "
        f"(PSI > 0.25, centroid > 0.2, p < 0.01). Guard: the default {guard.min_documents} documents and "
        f"{guard.min_chunks} chunks per side.\n"
    )
    header = ["kind", "docs", "chunks", "guard", *SIGNAL_COLUMNS, "MMD p-value"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < 1 else "---:" for i in range(len(header))) + "|")
    for size in sizes:
        for kind in ("same-kind", "shifted"):
            pool = profiles[kind]
            rows: dict[str, list[float]] = {s: [] for s in (*SIGNAL_COLUMNS, "p")}
            alerts = dict.fromkeys(rows, 0)
            chunk_counts, withheld = [], 0
            for draw in range(args.draws):
                sample = random.Random(1000 * size + draw).sample(pool, min(size, len(pool)))
                judged = job_drift(baseline, sample, everything)[PROMPT]
                chunk_counts.append(judged.chunks or 0)
                withheld += guard.shortfall(len(sample), judged.chunks or 0, ref.documents, ref.chunks) is not None
                for signal in SIGNAL_COLUMNS:
                    rows[signal].append(judged.scores[signal])
                    alerts[signal] += level(signal, judged.scores[signal]) == "alert"
                assert judged.mmd_p_value is not None
                rows["p"].append(judged.mmd_p_value)
                alerts["p"] += p_value_level(judged.mmd_p_value) == "alert"
            status = "insufficient" if withheld == args.draws else "scored" if not withheld else f"{withheld} withheld"
            cells = [
                kind,
                str(min(size, len(pool))),
                f"{min(chunk_counts)}–{max(chunk_counts)}",
                status,
                *(_cell(rows[s], alerts[s]) for s in SIGNAL_COLUMNS),
                _cell(rows["p"], alerts["p"], digits=3),
            ]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
