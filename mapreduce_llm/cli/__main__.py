"""``python -m mapreduce_llm.cli``: the same as the ``mapreduce-llm`` command."""

from mapreduce_llm.cli import main

main()
