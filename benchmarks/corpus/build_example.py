#!/usr/bin/env python3
"""Builds benchmarks/corpus/example/: the first ~18,000 characters of each document of benchmarks/corpus/docs.

`make run`'s default input. Each excerpt ends at the last paragraph break before the limit that is not inside
a fenced code block, so it reads as whole paragraphs. About 4,000-5,000 tokens of the embedded model each:
three chunks at the default 2,048-token context, so the example still shows several chunks per document and a
reduce level, in a few minutes on two CPU cores. The full corpus stays one `make run INPUT=benchmarks/corpus/docs`
away. Deterministic; stdlib only.

    python3 benchmarks/corpus/build_example.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "docs"
LIMIT = 18_000


def excerpt(text: str, limit: int = LIMIT) -> str:
    """The text up to the last paragraph break before ``limit`` characters that is outside a code fence."""
    best = 0
    in_fence = False
    position = 0
    for line in text.splitlines(keepends=True):
        if position + len(line) > limit:
            break
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        position += len(line)
        if not in_fence and line.strip() == "":
            best = position
    return text[:best].rstrip("\n") + "\n"


def main() -> None:
    out = HERE / "example"
    out.mkdir(exist_ok=True)
    for source in sorted(CORPUS.glob("*.md")):
        (out / source.name).write_text(excerpt(source.read_text(encoding="utf-8")), encoding="utf-8")
        print(out / source.name)


if __name__ == "__main__":
    main()
