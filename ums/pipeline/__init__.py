"""ums.pipeline: from a stored message to an e-mail, through Celery.

``configure(config)`` once per process, then ``submit(message_id)`` for each
new message, ``resume()`` at start and ``sweep(min_age=60)`` every minute
(the server); ``run_worker`` / ``spawn_embedded_workers`` for the workers.
See :mod:`ums.pipeline.tasks` for the steps and :mod:`ums.pipeline.app` for
the broker.
"""

from ums.pipeline.app import PipelineContext, configure, current, make_app, reset
from ums.pipeline.tasks import process_chain, process_message, resume, submit, sweep

__all__ = [
    "PipelineContext",
    "configure",
    "current",
    "make_app",
    "process_chain",
    "process_message",
    "reset",
    "resume",
    "submit",
    "sweep",
]
