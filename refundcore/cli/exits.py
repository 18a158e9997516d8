"""The command's exit statuses, what they mean (for the help texts), and the status a
refund's outcome exits with."""

from __future__ import annotations

from ..status import RefundStatus

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_UNKNOWN = 4
EXIT_ERROR = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit status:
  0  succeeded (or the command did what it was asked)
  1  the gateway declined (FAILED), or a callback failed verification
  2  usage, configuration or input error: nothing was sent
  3  PENDING: the gateway accepted the refund and will settle it later
  4  UNKNOWN: the request may have reached the gateway but the outcome is not
     known; run `refundcore query` before trying again
  5  nothing could be sent (connection refused, DNS), a plugin is missing or broken
"""

BATCH_EXIT_HELP = """\
exit status: the most serious row decides, in this order
  130  interrupted (Ctrl-C): rows in flight were finished and recorded; run the
       same command again to finish the batch (nothing is sent twice)
  4    some row is UNKNOWN: run `refundcore journal reconcile`, then the batch again
  5    some row could not be sent (ERROR: gateway unreachable, journal unusable);
       run the batch again to send it; also: a plugin is missing or broken
  1    some row FAILED (the gateway declined it)
  2    invalid rows: nothing was sent (or, with --skip-invalid, they were skipped);
       also usage and configuration errors
  3    some row is PENDING: the gateway will settle it later
  0    every row SUCCEEDED
"""

# A refund's outcome as the command's exit status.
STATUS_EXIT = {
    RefundStatus.SUCCEEDED: EXIT_OK,
    RefundStatus.FAILED: EXIT_FAILED,
    RefundStatus.PENDING: EXIT_PENDING,
    RefundStatus.UNKNOWN: EXIT_UNKNOWN,
}
