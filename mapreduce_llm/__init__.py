"""mapreduce-llm: map-reduce over documents far longer than an LLM's context window.

The flow, one module per stage: :mod:`.documents` (read, validate) → :mod:`.planning` with
:mod:`.chunking` and :mod:`.prompts` (chunks and exact token budgets) → :mod:`.engines` (vLLM in Ray) →
:mod:`.reduce` (the reduce tree) → :mod:`.results`; :mod:`.pipeline` runs it all, :mod:`.cli` is the command line.
"""

__version__ = "0.1.0"
