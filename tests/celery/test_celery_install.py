"""Installing refundcore's tasks: nothing connects (no broker, no journal), each app
keeps its own tasks, and task settings are checked."""

from __future__ import annotations

import warnings

import pytest

from refundcore import RefundClient
from refundcore.celery import RECONCILE, REFUND_ROW, TaskSettings, install
from refundcore.errors import ValidationError

celery = pytest.importorskip("celery")


def _refused() -> RefundClient:
    raise AssertionError("a client is made on a worker's first task, not at install")


def test_two_apps_in_one_process_keep_their_own_tasks() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Celery warns of a task name taken by another
        first, second = celery.Celery("first"), celery.Celery("second")
        first_tasks = install(first, _refused)
        second_tasks = install(second, _refused)
        # (What app.task returns stands for the task until the app is finalised.)
        assert first.tasks[REFUND_ROW] == first_tasks.refund_row
        assert second.tasks[REFUND_ROW] == second_tasks.refund_row
        assert second.tasks[RECONCILE] == second_tasks.reconcile
        assert first.tasks[REFUND_ROW] != second.tasks[REFUND_ROW]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("transient_retries", -1),
        ("transient_retries", 1.5),
        ("transient_retries", True),
        ("backoff_first", -0.5),
        ("backoff_max", float("nan")),
        ("reconcile_after", "30"),
    ],
)
def test_unusable_task_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as refused:
        TaskSettings(**{field: value})  # type: ignore[arg-type]
    assert refused.value.field == field
    assert repr(value) in str(refused.value)
