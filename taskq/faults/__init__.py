"""Fault injection, steady load and reconciliation for the local stack.

Reused by the kill tests, ``benchmarks/bench_kill_storm.py`` and a later ``taskq drill``:

* :mod:`taskq.faults.inject`: SIGKILL a supervised program's whole process group, Redis,
  one pool child; pause Redis with ``CLIENT PAUSE``; wait for a program to be back.
* :mod:`taskq.faults.load`: bounded, steady task submissions through nginx, recording what
  the API answered.
* :mod:`taskq.faults.reconcile`: accepted vs terminal (the API's task status, the independent
  truth) vs executions (the workers' log lines), and each kill's recovery time.

Everything targets loopback and is bounded in count and time.
"""
