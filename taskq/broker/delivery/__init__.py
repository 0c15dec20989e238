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

5. *A new master is a stall, whatever its clock says.* After a Sentinel failover ``TIME``
   and key expiry are another host's clock, and Redis replicates a lease's TTL as an
   absolute time: a clock ahead makes live leases look expired, a clock behind keeps a
   dead holder's lease alive longer. Every script that can open the grace compares the
   clock record's ``epoch`` (the ``run_id`` of the Redis that wrote it) with the server's
   own: a different process (a promoted replica, or a restart) opens the grace of point 3
   at once, even when the stamps look fresh; so does a clock that went back. Live holders
   renew within it, on the new clock. On such a change every holder's lease is also cut
   to at most one grace, so a dead holder looks alive no longer after a failover than
   after any stall, however far behind the new clock is.

**Durability** (with replicas, ``TASKQ_REDIS_WAIT_REPLICAS`` > 0; with one Redis every
write is in its AOF, fsynced every second). A write waits for a replica (``WAIT``) where
losing it in a failover would run a task twice or lose a result, and nowhere else:

* submission (the API's script): waits, pipelined per batch; no 202 without it
  (``api/script_batch.py``).
* start (:data:`scripts.BEGIN`: delivery count, run lease, STARTED): waits, in the same
  round trip (:mod:`.guard`). ``WAIT`` confirms everything the master took before, so it
  also covers the pop's held record. Not confirmed: the code does not run, the message
  goes back (a new master lacking the pop has it in its queue anyway).
* pop (``POP_AND_HOLD``): no wait of its own. Lost, the message is in its queue on the new
  master and is delivered again; if the first copy starts too, the run lease makes one
  wait for the other, and the completion record answers it.
* result states (the backend's SUCCESS, FAILURE, RETRY; the SUCCESS is the completion
  record): wait; short of a replica they are written again (Celery's backend retry), on
  the new master after a failover. The ack comes only after the result is stored.
* ack (:data:`scripts.ACK`): no wait. Lost, the record reappears held by its holder; when
  that holder ends, the sweep redelivers it and the copy answers from the SUCCESS, which
  was on a replica before the ack was sent. Nothing runs twice.
* restores, renewals, the clock record: no wait. A lost restore leaves a message held
  (swept again once its holder is gone); renewals and the clock are rewritten within the
  grace that a new master opens (point 5).

What is not covered: a worker cut off from a Redis that everyone else still reaches, for
longer than one lease TTL, is presumed dead; its running task may then run beside a
redelivered copy. Completion records make the second one's effect identical (every task
here is a pure computation of its input). A revocation is not waited for: one lost in a
failover lets the task run.
"""
