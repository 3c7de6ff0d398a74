"""The worker's Dramatiq middleware, one per module: what happens around every job's run,
so that actors contain only their work. ``workers.app`` installs them in this order, all
before Dramatiq's Retries (so that their ``after_*`` hooks, run in reverse, see its verdict):

- ``tracing.JobTracing`` (only when tracing is on, first): a span per run, in the trace of
  whoever sent the message, with a span per stage;
- ``lifecycle.JobLifecycle``: the gates before a run (the queue's pause, the job's lease,
  the start of its attempt) and the job's state after it (completed, retrying);
- ``dead_letters.DeadLetters``: a final failure recorded as a dead letter;
- ``heartbeat.Heartbeat``: this process, and the leases it holds, kept alive in Redis;
- ``timings.JobTimings``: how long each run and stage took, into the metrics;
- then ``server.infra.fair.FairDispatch``: feeding each user's waiting messages in turn.

Two modules are not middleware but what the middleware consult: ``leases`` (one run of a
job at a time) and ``pause`` (the queues an admin paused). None of them reads an actor
option: the actors' retry and time-limit options belong to Dramatiq's Retries and
TimeLimit. The message options they set are declared in ``lifecycle``.
"""
