"""The worker process: one supervisor owning the broker connection, forked children
running tasks (the executor decodes each body, once), and the HTTP endpoints.

Nothing is imported here: prometheus-client must be pointed at its multiprocess
directory (runtime.metrics.setup_metrics) before it is first imported.
"""
