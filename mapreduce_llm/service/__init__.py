"""The batch service: OpenAI's Batch API (files + batches) over Ray jobs (``mapreduce-llm serve``).

``formats`` (the API's objects; the line shapes are shared with ``run`` in :mod:`mapreduce_llm.batch_format`),
``store`` (the state folder), ``limits`` (what is accepted and kept; API errors), ``batches`` (the lifecycle),
``batch_files`` (input split per job, output and error files), ``jobs`` (Ray jobs and their output folders),
``specs`` (each job's spec), ``auth`` (bearer tokens), ``ray_head`` (a local token-auth head), ``app`` (the HTTP
routes), ``metrics`` (the service's own Prometheus metrics), ``webhooks`` (signed events when a batch ends,
``--webhook-url``), ``server`` (all of it started together).
"""

from __future__ import annotations

from mapreduce_llm.service.server import ServeSettings, serve

__all__ = ["ServeSettings", "serve"]
