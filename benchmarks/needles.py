"""A long-document "needle in a haystack" question set, built deterministically from the example corpus.

Why: the corpus questions (benchmarks/corpus/questions.jsonl) are about the Python documentation, which a
model may answer from memory without reading the document. Here every answer is a *planted fictional fact*
("The access code for the Halvorsen archive is 4417.") that no model can know, so a right answer shows that
the job found it in the text. Documents *without* the fact, asked the same kind of question, measure the
other half: does the job say "NOT FOUND" instead of making an answer up?

What it builds, for each split (``dev``: 8 facts, ``test``: 12 facts; the two pools share nothing):

- Haystack windows: the four documents of benchmarks/corpus/docs cut into windows of whole paragraphs
  (blank-line separated; a fenced code block is never cut) of about 11,000 tokens of the served model
  (the embedded SmolLM2 tokenizer). Within each document the windows alternate test, dev, test, ... so both
  splits cover every document and the two splits never share text.
- One needle document per fact: a window of its split with the fact's statement inserted as its own
  paragraph at a relative position; the positions spread evenly over 0.05 ... 0.95 across the split's facts.
- Four no-fact documents: the haystack of one of the split's needle documents *without* its statement,
  asked that fact's question (a control pair: the same text, only the fact missing); expected answer null.

Records are lines of the job input JSONL format: ``id``, ``text``, ``question``, ``answer`` (null when the
document does not contain it), ``position`` (the target relative position of the statement, null when
absent), ``needle_start`` (its character offset in ``text``), ``split``; the other fields (``kind`` of
fact, ``source`` file, ``source_start``/``source_end``: the haystack's character span in it) become the
job's document metadata. Score outputs with :func:`is_correct` (the package's
:func:`mapreduce_llm.prompts.compare.is_correct`, which `mapreduce-llm prompts compare` scores with).

    python benchmarks/needles.py --split test --out out/needles-test.jsonl
"""

from __future__ import annotations

import argparse
import bisect
import functools
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mapreduce_llm.prompts.compare import is_correct

if TYPE_CHECKING:
    from mapreduce_llm.tokenization import Tokenizer

__all__ = ["FACTS", "FIELDS", "build_needle_set", "is_correct"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DOCS = Path(__file__).resolve().parent / "corpus" / "docs"
WINDOW_TOKENS = 11_000
"""A window takes whole paragraphs until it has at least this many tokens."""
FIRST_POSITION, LAST_POSITION = 0.05, 0.95
POSITION_TOLERANCE = 0.02
"""The statement starts within this (as a fraction of the document's characters) of its target position."""
NO_FACT_DOCUMENTS = 4
SPLITS = ("dev", "test")


class Fact(NamedTuple):
    """A fictional fact: the sentence planted in a document, the question about it and its short answer."""

    kind: str
    statement: str
    question: str
    answer: str


FACTS: dict[str, tuple[Fact, ...]] = {
    "dev": (
        Fact(
            "code",
            "The access code for the Halvorsen archive is 4417.",
            "What is the access code for the Halvorsen archive?",
            "4417",
        ),
        Fact(
            "person",
            "The lighthouse on Skerra Island is kept by a woman named Maud Tarrant.",
            "What is the surname of the keeper of the lighthouse on Skerra Island?",
            "Tarrant",
        ),
        Fact(
            "place",
            "The Quillfeather Bakery moved its ovens to the town of Brackenmoor.",
            "To which town did the Quillfeather Bakery move its ovens?",
            "Brackenmoor",
        ),
        Fact(
            "colour",
            "The front door of the Marwick guesthouse is painted vermilion.",
            "What colour is the front door of the Marwick guesthouse?",
            "vermilion",
        ),
        Fact(
            "date",
            "The Fennimore footbridge over the river Ilse was finished in 1871.",
            "In which year was the Fennimore footbridge over the river Ilse finished?",
            "1871",
        ),
        Fact(
            "object",
            "Professor Idris Calloway keeps an astrolabe on the windowsill of her study.",
            "What does Professor Idris Calloway keep on the windowsill of her study?",
            "astrolabe",
        ),
        Fact(
            "animal",
            "The mascot of the Dunmore rowing club is a grey heron.",
            "What kind of bird is the mascot of the Dunmore rowing club?",
            "heron",
        ),
        Fact(
            "number",
            "The Ashgrove orchard has exactly 362 pear trees.",
            "How many pear trees does the Ashgrove orchard have?",
            "362",
        ),
    ),
    "test": (
        Fact(
            "code",
            "The combination of the safe in the Orlov study is 8093.",
            "What is the combination of the safe in the Orlov study?",
            "8093",
        ),
        Fact(
            "person",
            "The chess club in Lowmoor is run by a retired pilot named Desmond Achterberg.",
            "What is the surname of the retired pilot who runs the chess club in Lowmoor?",
            "Achterberg",
        ),
        Fact(
            "place",
            "The annual Lantern Fair is held in the village of Cragsmere.",
            "In which village is the annual Lantern Fair held?",
            "Cragsmere",
        ),
        Fact(
            "colour",
            "The sails of the fishing boat Northwind Belle are dyed ochre.",
            "What colour are the sails of the fishing boat Northwind Belle?",
            "ochre",
        ),
        Fact(
            "date",
            "The Elmstead choir gave its first concert in 1923.",
            "In which year did the Elmstead choir give its first concert?",
            "1923",
        ),
        Fact(
            "object",
            "The time capsule under the Greyfriars clock tower holds a silver harmonica.",
            "What musical instrument is in the time capsule under the Greyfriars clock tower?",
            "harmonica",
        ),
        Fact(
            "animal",
            "The ship's cat of the ferry Saltmarsh Rose is called Marmalade.",
            "What is the name of the ship's cat of the ferry Saltmarsh Rose?",
            "Marmalade",
        ),
        Fact(
            "number",
            "The main telescope of the Kestrel Hill observatory weighs 5260 kilograms.",
            "How many kilograms does the main telescope of the Kestrel Hill observatory weigh?",
            "5260",
        ),
        Fact(
            "place",
            "The Corrin family's watermill stands on the river Wendle.",
            "On which river does the Corrin family's watermill stand?",
            "Wendle",
        ),
        Fact(
            "food",
            "The signature dish of the Copperkettle inn is rhubarb pie.",
            "What kind of pie is the signature dish of the Copperkettle inn?",
            "rhubarb",
        ),
        Fact(
            "object",
            "The ring found in the Barrow Lane excavation is set with a garnet.",
            "Which gemstone is set in the ring found in the Barrow Lane excavation?",
            "garnet",
        ),
        Fact(
            "date",
            "The Tillbury harvest market is always held in October.",
            "In which month is the Tillbury harvest market held?",
            "October",
        ),
    ),
}


class Window(NamedTuple):
    """A haystack: ``text`` is ``source``'s characters ``start:end`` (whole paragraphs)."""

    source: str
    number: int
    """The window's place in its file: 0, 1, 2, ..."""
    start: int
    end: int
    text: str
    paragraph_starts: tuple[int, ...]
    """Where each paragraph after the first starts in ``text``: the places a statement can go."""


def corpus_texts() -> dict[str, str]:
    """The corpus documents by file name, in name order."""
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))}


def check_facts(corpus: dict[str, str]) -> None:
    """Assert the fact pools are usable: answers short, unique, stated, not asked and nowhere in the corpus."""
    haystack = "\n".join(corpus.values()).lower()
    facts = [f for split in SPLITS for f in FACTS[split]]
    answers = [f.answer.lower() for f in facts]
    assert len(FACTS["dev"]) == 8 and len(FACTS["test"]) == 12
    assert len({f.statement for f in facts}) == len(facts), "statements repeat"
    for fact in facts:
        answer = fact.answer.lower()
        assert len(fact.answer.split()) <= 2, f"answer not short: {fact.answer!r}"
        assert fact.answer in fact.statement, f"answer not verbatim in its statement: {fact.answer!r}"
        assert answer not in fact.question.lower(), f"question gives the answer away: {fact.question!r}"
        assert answer not in haystack, f"answer occurs in the corpus: {fact.answer!r}"
        assert sum(answer in other for other in answers) == 1, f"answer not unique: {fact.answer!r}"
        assert fact.answer in FIELDS, f"no field phrase for {fact.answer!r}: add one to FIELDS"
        assert answer not in FIELDS[fact.answer].lower(), f"field gives the answer away: {fact.answer!r}"


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the paragraphs of ``text`` (split on blank lines, fenced code blocks kept whole)."""
    spans: list[tuple[int, int]] = []
    start = piece = 0
    in_fence = False
    for sep in [*re.finditer(r"\n(?:[ \t]*\n)+", text), None]:
        end = sep.start() if sep else len(text)
        for line in text[piece:end].split("\n"):
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
        piece = sep.end() if sep else len(text)
        if sep is None or not in_fence:
            if text[start:end].strip():
                spans.append((start, end))
            start = piece
    return spans


WINDOWS: dict[str, dict[str, tuple[Window, ...]]] = {}
"""The windows cut so far, by tokenizer name (cutting tokenizes the whole corpus)."""


def windows(tokenizer: Tokenizer) -> dict[str, tuple[Window, ...]]:
    """Every haystack window of the corpus by split, in (file, number) order; the splits never overlap."""
    if tokenizer.name not in WINDOWS:
        WINDOWS[tokenizer.name] = cut_windows(tokenizer)
    return WINDOWS[tokenizer.name]


def cut_windows(tokenizer: Tokenizer) -> dict[str, tuple[Window, ...]]:
    """Cut the corpus into windows (see :func:`windows`)."""
    out: dict[str, list[Window]] = {split: [] for split in SPLITS}
    for name, text in corpus_texts().items():
        _, offsets = tokenizer.encode_data_with_offsets(text)
        token_starts = offsets[:, 0].tolist()
        spans = paragraph_spans(text)
        first, number = 0, 0
        for last, (_, end) in enumerate(spans):
            start = spans[first][0]
            if bisect.bisect_left(token_starts, end) - bisect.bisect_left(token_starts, start) < WINDOW_TOKENS:
                continue
            chunk = text[start:end]
            starts = tuple(s - start for s, _ in spans[first + 1 : last + 1])
            # Alternate within each file, test first: both splits see every file, never the same text.
            out[SPLITS[(number + 1) % 2]].append(Window(name, number, start, end, chunk, starts))
            first, number = last + 1, number + 1
    return {split: tuple(found) for split, found in out.items()}


def positions(n: int) -> list[float]:
    """``n`` relative positions spread evenly over FIRST_POSITION ... LAST_POSITION."""
    if n == 1:
        return [(FIRST_POSITION + LAST_POSITION) / 2]
    return [FIRST_POSITION + (LAST_POSITION - FIRST_POSITION) * i / (n - 1) for i in range(n)]


def plant(window: Window, statement: str, position: float) -> tuple[str, int]:
    """Insert ``statement`` as a paragraph at the paragraph start nearest ``position``; (text, its offset)."""
    length = len(window.text) + len(statement) + 2
    at = min(window.paragraph_starts, key=lambda s: (abs(s / length - position), s))
    text = f"{window.text[:at]}{statement}\n\n{window.text[at:]}"
    assert abs(at / len(text) - position) <= POSITION_TOLERANCE, (window.source, window.number, position)
    return text, at


@functools.cache
def default_tokenizer() -> Tokenizer:
    """The served model's tokenizer (the embedded SmolLM2, converted once per machine)."""
    from mapreduce_llm.model_store import ensure_embedded_model
    from mapreduce_llm.tokenization import HFTokenizer

    return HFTokenizer(ensure_embedded_model())


FIELDS: dict[str, str] = {
    # What each question asks for, as the named value an extract prompt looks for (by answer).
    "4417": "the access code for the Halvorsen archive",
    "Tarrant": "the surname of the keeper of the lighthouse on Skerra Island",
    "Brackenmoor": "the town the Quillfeather Bakery moved its ovens to",
    "vermilion": "the colour of the front door of the Marwick guesthouse",
    "1871": "the year the Fennimore footbridge over the river Ilse was finished",
    "astrolabe": "what Professor Idris Calloway keeps on the windowsill of her study",
    "heron": "the kind of bird that is the mascot of the Dunmore rowing club",
    "362": "the number of pear trees in the Ashgrove orchard",
    "8093": "the combination of the safe in the Orlov study",
    "Achterberg": "the surname of the retired pilot who runs the chess club in Lowmoor",
    "Cragsmere": "the village where the annual Lantern Fair is held",
    "ochre": "the colour of the sails of the fishing boat Northwind Belle",
    "1923": "the year the Elmstead choir gave its first concert",
    "harmonica": "the musical instrument in the time capsule under the Greyfriars clock tower",
    "Marmalade": "the name of the ship's cat of the ferry Saltmarsh Rose",
    "5260": "the weight in kilograms of the main telescope of the Kestrel Hill observatory",
    "Wendle": "the river the Corrin family's watermill stands on",
    "rhubarb": "the kind of pie that is the signature dish of the Copperkettle inn",
    "garnet": "the gemstone set in the ring found in the Barrow Lane excavation",
    "October": "the month the Tillbury harvest market is held",
}


def build_needle_set(split: str, tokenizer: Tokenizer | None = None) -> list[dict[str, Any]]:
    """The records of one split (``dev`` or ``test``): its needle documents, then its no-fact documents."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    tok = tokenizer or default_tokenizer()
    check_facts(corpus_texts())
    facts, haystacks = FACTS[split], windows(tok)[split]

    def record(
        kind: str, number: int, fact: Fact, window: Window, text: str, at: int | None, position: float | None
    ) -> dict[str, Any]:
        return {
            "id": f"{split}-{kind}-{number:02d}",
            "text": text,
            "question": fact.question,
            "field": FIELDS[fact.answer],  # the same question for extract prompts (`field`)
            "answer": fact.answer if at is not None else None,
            "position": round(position, 4) if position is not None else None,
            "needle_start": at,
            "split": split,
            "kind": fact.kind,
            "source": window.source,
            "source_start": window.start,
            "source_end": window.end,
        }

    # Fact i goes into window i (mod the number of windows), so no-fact document k, which reuses the
    # haystack of fact k * windows // 4, gets a window of its own.
    records = []
    for i, (fact, position) in enumerate(zip(facts, positions(len(facts)), strict=True)):
        window = haystacks[i % len(haystacks)]
        text, at = plant(window, fact.statement, position)
        records.append(record("needle", i, fact, window, text, at, position))
    for k in range(NO_FACT_DOCUMENTS):
        i = k * len(haystacks) // NO_FACT_DOCUMENTS
        window = haystacks[i % len(haystacks)]
        records.append(record("nofact", k, facts[i], window, window.text, None, None))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--out", type=Path, help="JSONL file to write (default: out/needles-SPLIT.jsonl)")
    args = parser.parse_args()

    out: Path = args.out or Path("out") / f"needles-{args.split}.jsonl"
    records = build_needle_set(args.split)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tokenizer = default_tokenizer()
    tokens = [len(tokenizer.encode_data(rec["text"])) for rec in records]
    needles = sum(rec["answer"] is not None for rec in records)
    print(
        f"{args.split}: {len(records)} documents ({needles} with a planted fact, {len(records) - needles} without), "
        f"tokens {min(tokens)}-{max(tokens)} -> {out}"
    )


if __name__ == "__main__":
    main()
