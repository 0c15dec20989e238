"""The delivery contract: every accepted message runs, and never twice at the same time.

**Invariant.** At every instant a message is in exactly one of: its queue, *held* (recorded in
kombu's ``unacked`` hash, with the holder's id in :data:`keys.HOLDERS`), or acknowledged. A
task attempt's code runs only inside a *run lease* (:func:`keys.run_key`) taken by its
holder at start; a second copy starts only when the lease's owner is provably gone or the
attempt already finished (then the copy answers from the completion record).

**Argument.**

1. *Holders have leases, renewed by the process, not the consumer.* Each worker main
   process has a lease key (:func:`keys.lease_key`) with a Redis TTL, renewed every
   ``lease_renew_s`` by a thread that lives as long as the process (:mod:`.lease`), so a
   warm shutdown draining its pool, a consumer reconnecting after a Redis outage, or a
   pool busy for minutes keep their messages. All times are Redis's (``TIME`` and key
   expiry inside scripts): a worker's clock never decides anything.
2. *A held message goes back only by compare-and-move* (:data:`scripts.RESTORE`), one script
   that re-reads the record and checks the reason in the same atomic step:
   ``sweep`` — the holder's lease has expired and the broker is not in its stall grace;
   ``return`` — the live holder hands back a message whose attempt never started (channel
   close, warm shutdown: prefetched work goes back at once, to the front of its queue);
   ``reject`` — the holder says the execution ended (its pool child died). A restore that
   lost a race (acked, already restored, another holder) changes nothing.
3. *Nobody is presumed dead while nobody could renew.* Every renewal stamps the broker's
   clock record (:data:`keys.CLOCK`). A sweep or renewal that finds no stamp for longer
   than ``stall_gap_s`` knows the broker (or every worker) was unreachable: it opens a
   grace of one lease TTL in which no lease-based sweep restores anything, time for every
   live holder to renew. A Redis pause, SIGSTOP or restart from its AOF therefore runs
   nothing twice.
4. *The run lease fences what a wrong restore would let through* (:data:`scripts.BEGIN`).
   A copy whose attempt's run lease belongs to a live holder's other delivery does not
   run: it waits, holding its message, until that run finishes (then it is a suppressed
   duplicate) or its owner's lease expires (then it takes over).

What is not covered: a worker cut off from a Redis that everyone else still reaches, for
longer than one lease TTL, is presumed dead; its running task may then run beside a
redelivered copy. Completion records make the second one's effect identical (every task
here is a pure computation of its input).
"""
