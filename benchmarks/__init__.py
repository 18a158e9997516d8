"""refundcore's benchmark suite: every figure is a ratio against a hand-written baseline
measured in the same run (``make bench``, i.e. ``python -m benchmarks``).

* ``client_cpu``  per-refund client CPU, refundcore vs a hand-written ``requests.Session``
                  integration, without and with a SQLite journal on each side
* ``throughput``  a batch of refunds through a gateway with 20 ms latency, vs a
                  ``ThreadPoolExecutor`` over ``requests``
* ``startup``     ``refundcore providers`` vs ``python -c "import requests"``
* ``callbacks``   callbacks verified per second vs a hand-written verifier
* ``endpoint``    the WSGI callback app on waitress vs a hand-written WSGI endpoint

Gateways are the providers' own emulators, served on 127.0.0.1 by ``benchmarks.gateway``
in a separate process, so the benchmark process's CPU time is the client's alone; the
callback endpoints are served in processes of their own too.
"""
