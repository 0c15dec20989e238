"""``taskq drill``: on-call drills as a product.

A drill runs the project's own Locust users against the stack, injects one kind of fault on
a schedule jittered by ``--seed`` (reusing :mod:`taskq.faults`), waits for the queues to
drain, reconciles what was accepted with the API and the logs (trace completeness by
``taskq trace``'s own reconstruction) and writes ``report.json``, ``report.md`` and plots.

* :mod:`taskq.drills.plan`: drill names, options, the fault schedule, compose commands.
* :mod:`taskq.drills.locust_run`: Locust, headless, as a bounded subprocess.
* :mod:`taskq.drills.monitor`: queue depth per queue and priority, /readyz, Locust's CPU.
* :mod:`taskq.drills.inject_faults`: one planned fault against the local stack.
* :mod:`taskq.drills.analysis`: reconciliation, latencies by phase, errors over time.
* :mod:`taskq.drills.report`, :mod:`taskq.drills.plots`: the report files.
* :mod:`taskq.drills.run`: one drill end to end; :mod:`taskq.drills.cli`: the command.
* :mod:`taskq.drills.live`: live pipeline figures for the Locust web UI's Drills tab.
"""
