"""refundcore's benchmark suite: every figure is a ratio against a hand-written baseline
measured in the same run (``make bench``, i.e. ``python -m benchmarks``).

* ``client_cpu``  per-refund client CPU, refundcore vs ``requests`` + inline signing
* ``throughput``  a batch of refunds through a gateway with 20 ms latency
* ``startup``     ``refundcore providers`` vs ``python -c "import requests"``
* ``callbacks``   callbacks verified per second vs the raw cryptography alone

Gateways are the providers' own emulators, served on 127.0.0.1 by ``benchmarks.gateway``
in a separate process, so the benchmark process's CPU time is the client's alone.
"""
