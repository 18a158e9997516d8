"""``refundcore batch FILE --executor celery`` and ``refundcore batch status BATCH_ID``:
a batch handed to Celery workers through the journal, and followed there."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from ..errors import ConfigError
from .batch import _batch_exit, _batch_refused, _batch_text, _print_skipped, _rates, cmd_batch
from .context import client_for
from .exits import EXIT_PENDING, EXIT_USAGE
from .output import emit

__all__ = ["APP_ENV", "cmd_batch_any", "cmd_celery_batch"]

#: Where ``--celery-app`` is read from when it is not given.
APP_ENV = "REFUNDCORE_CELERY_APP"


def cmd_batch_any(args: argparse.Namespace) -> int:
    """``refundcore batch``: a local batch, or one on Celery (``--executor celery``,
    ``status BATCH_ID``)."""
    if args.executor == "celery" or (str(args.file) == "status" and args.batch_id):
        return cmd_celery_batch(args)
    if args.batch_id is not None or args.wait or args.celery_app:
        print(
            "refundcore: batch takes one FILE; `batch status BATCH_ID` and --celery-app "
            "are for batches run with --executor celery",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return cmd_batch(args)


def cmd_celery_batch(args: argparse.Namespace) -> int:
    """Submit a file to Celery workers, or show a submitted batch (``status``)."""
    from ..batch.report import report_format
    from ..journal.manifest import postgres_journal

    if args.report is not None:
        report_format(args.report)  # refuse a bad name before anything is enqueued
    client = client_for(args, lease_seconds=args.lease)
    with client:
        postgres_journal(client.journal, "--executor celery")
        if str(args.file) == "status" and args.batch_id:
            return _follow(args, client, args.batch_id)
        return _submit(args, client)


def _submit(args: argparse.Namespace, client: Any) -> int:
    from ..batch import BatchInvalid, read_batch_file
    from ..celery import submit_batch

    if args.batch_id is not None:
        raise ConfigError("batch takes one FILE", field="file")
    rates = _rates(args.rate)
    app = load_app(args.celery_app or os.environ.get(APP_ENV))
    parsed = read_batch_file(args.file)
    try:
        submitted = submit_batch(
            app,
            client,
            parsed,
            rate=rates,
            skip_invalid=args.skip_invalid,
            lease_seconds=args.lease,
            source=str(args.file),
        )
    except BatchInvalid as refused:
        return _batch_refused(refused, args)
    finally:
        parsed.close()
    print(
        f"batch {submitted.batch_id}: {submitted.rows} rows, {submitted.enqueued} enqueued "
        f"(refundcore batch status {submitted.batch_id} --wait)",
        file=sys.stderr,
    )
    if args.wait:
        return _follow(args, client, submitted.batch_id)
    emit(
        args,
        {
            "batch_id": submitted.batch_id,
            "rows": submitted.rows,
            "invalid": submitted.invalid,
            "enqueued": submitted.enqueued,
            "file": str(args.file),
        },
        submitted.batch_id,
    )
    return 0


def _follow(args: argparse.Namespace, client: Any, batch_id: str) -> int:
    from ..batch import ProgressPrinter, format_progress
    from ..celery import batch_progress, batch_report, wait_for_batch

    if args.wait:
        printer = ProgressPrinter(sys.stderr, interval=args.progress_interval)
        report = wait_for_batch(client, batch_id, on_progress=printer)
        finished = True
    else:
        progress = batch_progress(client, batch_id)
        print(f"batch: {format_progress(progress, bar=False)}", file=sys.stderr)
        report = batch_report(client, batch_id)
        finished = progress.finished
    with report:
        status = _batch_exit(report) if finished else EXIT_PENDING
        if finished:
            _print_skipped(report)
        if args.report is not None:
            report.write(args.report)
        text = _batch_text(report, args)
        if not finished:
            text += "\nstill running: `refundcore batch status BATCH_ID --wait` follows it"
        emit(
            args,
            {
                **report.summary(),
                "finished": finished,
                "report": None if args.report is None else str(args.report),
                "exit_status": status,
            },
            text,
        )
    return status


def load_app(spec: str | None) -> Any:
    """The Celery app named ``module:attribute`` (``ConfigError`` naming
    ``celery_app`` when it is missing or cannot be loaded)."""
    if not spec:
        raise ConfigError(
            f"--executor celery needs the Celery app: --celery-app MODULE:ATTR or ${APP_ENV}",
            field="celery_app",
        )
    module_name, _, attribute = spec.partition(":")
    # As `celery -A` does: the app's module may sit in the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
        app = getattr(module, attribute or "app")
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"cannot load the Celery app {spec!r}: {exc}", field="celery_app"
        ) from exc
    if not callable(getattr(app, "send_task", None)):
        raise ConfigError(f"{spec!r} is not a Celery app", field="celery_app")
    return app
