"""Limits across every worker and Functions instance: concurrency caps and rate limits on Table Storage.

Declared on the job (``concurrency=``, ``rate_limit=``, ``limit_key=``, ``limit=``; see
``azjobs.model.limits``), enforced here through the execution core's ``before_run`` hook
(``azjobs.limits.hook.LimitsHook``, wired by ``azjobs.hosting``): slots are leased rows
(``slots``), rates are counted in sub-windows (``tokens``), both in one table (``table``);
``tally`` keeps the counts ``azjobs limits`` shows (``report``).
"""
