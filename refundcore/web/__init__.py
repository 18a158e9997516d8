"""The operator console: where operations staff see what is stuck and act on it.

:func:`console_app` is a WSGI app over the refund journal, to mount inside the host
application behind its own login (the host names the operator on each request);
``refundcore console`` serves it alone on loopback behind an access token. Needs
``pip install 'refundcore[console]'`` (Jinja2).
"""

from __future__ import annotations

from .app import Operator, console_app

__all__ = ["Operator", "console_app"]
