"""The batch service: OpenAI's Batch API (files + batches) over Ray jobs (``mapreduce-llm serve``).

``formats`` (the API's shapes; input lines → documents, results → output lines), ``store`` (the state folder),
``batches`` (the lifecycle), ``jobs`` (Ray jobs and their output folders), ``specs`` (each job's spec),
``auth`` (bearer tokens), ``ray_head`` (a local token-auth head), ``app`` (the HTTP routes), ``webhooks`` (signed
events when a batch ends, ``--webhook-url``), ``server`` (all of it started together).
"""

from __future__ import annotations

from mapreduce_llm.service.server import ServeSettings, serve

__all__ = ["ServeSettings", "serve"]
