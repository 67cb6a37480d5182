"""`ingestion run`: scheduler + worker + HTTP API composed in one process."""

from __future__ import annotations

import asyncio

import structlog

from ingestion.config import PROVIDER_NAMES, Settings
from ingestion.services import Services, install_stop_signals, load_plugins

__all__ = ["run_service"]


async def run_service(settings: Settings) -> None:
    """`ingestion run`: scheduler + worker + HTTP API in one process, until SIGINT/SIGTERM.

    With REDIS_URL set the worker and scheduler use the Redis queue (other processes may share
    it); without it, the in-process queue. SIGINT/SIGTERM stop all three: the worker lets
    running jobs finish within SHUTDOWN_GRACE_PERIOD. If one part fails, the others stop too
    and the failure is raised.
    """
    from ingestion import metrics
    from ingestion.api import create_app, serve
    from ingestion.forget import Forgetter
    from ingestion.queue import LocalJobQueue, RedisJobQueue
    from ingestion.queue.base import Consumer
    from ingestion.scheduler import Scheduler
    from ingestion.worker import Worker, engine_runner

    log = structlog.get_logger("ingestion.run")
    metrics.check_multiprocess(settings)
    load_plugins(settings)
    stop = asyncio.Event()
    install_stop_signals(stop)
    queue: RedisJobQueue | LocalJobQueue
    consumer: Consumer
    if settings.redis_url:
        queue = RedisJobQueue(settings)
        consumer = queue.consumer()
    else:
        queue = LocalJobQueue(settings)
        consumer = queue
    services = await Services.open(settings, lock=consumer.sync_lock())
    try:
        log.info(
            "ingestion service starting",
            database=settings.database_kind,
            queue=queue.kind,
            sink=services.sink.kind,
            api=f"http://{settings.api_host}:{settings.api_port}",
            api_key=settings.ingestion_api_key is not None,
            allowed_hosts=list(settings.api_host_names),
            schedules={name: settings.cron_for(name) for name in PROVIDER_NAMES},
        )
        worker = Worker(settings, consumer, engine_runner(services.engine))
        scheduler = Scheduler(settings, queue, services.db, clock=services.clock)
        app = create_app(services, queue)
        forgetter = Forgetter.of(services)
        tasks = [
            asyncio.create_task(forgetter.run(stop)),
            asyncio.create_task(serve(app, settings.api_host, settings.api_port, stop)),
            asyncio.create_task(worker.run(stop)),
            asyncio.create_task(scheduler.run(stop)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        log.info("ingestion service stopped")
    finally:
        await services.aclose()
        await queue.aclose()
