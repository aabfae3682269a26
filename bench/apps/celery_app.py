"""The Celery app under test: acks after execution, no result backend, JSON only."""

from __future__ import annotations

from celery import Celery  # type: ignore[import-untyped]

from bench import workload

app = Celery("bench", broker=workload.broker_url())
app.conf.update(
    task_acks_late=True,              # ack after the task ran, like qscale
    task_ignore_result=True,
    result_backend=None,
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,     # Celery's default
    task_default_queue=workload.queue_name(),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(seq: int) -> None:
    workload.run_task("noop", seq)


@app.task(name="bench.cpu")  # type: ignore[untyped-decorator]
def cpu(seq: int) -> None:
    workload.run_task("cpu", seq)
