"""The trace explorer's view models: pure functions of the trace model
(:mod:`taskq.search.trace`) and the log store, with no web framework.

- :mod:`.waterfall`: one time axis for a trace's exchanges, publishes, queue waits and
  attempts (offsets and widths as fractions of the axis), children nested under parents,
  and the one-sentence verdict;
- :mod:`.lookup`: what a search box query means (exact id, prefix, task id, status search)
  and its results, each with the status the trace model decides;
- :mod:`.refs`: stable references to single log lines (for "surrounding lines" URLs).

The statuses shown are the trace model's (``TaskSummary.final_status``,
``Attempt.outcome``): nothing here decides one.
"""
