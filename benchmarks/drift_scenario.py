"""A drift scenario you can rerun: baseline on Python docs, a held-out part of them, and license texts.

Three corpora of paragraph-aligned pieces (lengths drawn from the same seeded distribution, so that only the
*kind* of text differs):

- ``baseline``:  pieces of the example corpus (benchmarks/corpus/docs, Python 3.11 documentation);
- ``heldout``:   other pieces of the same documentation (interleaved with the baseline's, never the same);
- ``different``: pieces of the license texts in /usr/share/common-licenses (GPL, Apache, MPL, ...).

Each corpus is profiled without an engine (``mapreduce-llm drift profile``: plan + embed), the baseline is
built from the first, and the other two are scored against it. Expected: ``heldout`` stays under every
threshold, ``different`` goes over the alert thresholds. Also prints the embedding cost (chunks per second).

    python benchmarks/drift_scenario.py [--out out/drift-scenario] [--pieces 40]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
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


def main() -> None:
    from mapreduce_llm.config import JobSpec
    from mapreduce_llm.embeddings import Embedder
    from mapreduce_llm.errors import DocumentError
    from mapreduce_llm.monitoring.baselines import BaselineStore
    from mapreduce_llm.monitoring.drift import build_baseline, job_drift, level
    from mapreduce_llm.monitoring.profiles import profile_document, write_profiles
    from mapreduce_llm.runner import plan_job

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/drift-scenario"))
    parser.add_argument("--pieces", type=int, default=40, help="documents per corpus")
    args = parser.parse_args()

    folders = build_corpora(args.out / "corpora", args.pieces)
    embedder = Embedder()
    embedder.embed(["warm up"])  # load the model outside the timing
    profiles = {}
    for name, folder in folders.items():
        spec = JobSpec.model_validate({"input": folder, "output": args.out / name, "prompts_dir": ROOT / "prompts"})
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
    print(f"baseline: {BaselineStore(args.out / 'baselines').save(baseline)}")
    for name in ("heldout", "different"):
        for key, scores in job_drift(baseline, profiles[name]).items():
            for signal, score in scores.items():
                print(f"{name:10} {key:16} {signal:22} {score:8.4f}  {level(signal, score)}")


if __name__ == "__main__":
    main()
