"""The sweep engine: one sweep run on Ray Tune with Optuna.

Owns: the search space (:mod:`.space`), samplers (:mod:`.samplers`), the MO-ASHA scheduler
(:mod:`.mo_asha`), the Tune trainable (:mod:`.trainable`) and the trial it runs
(:mod:`.model_trial`), Tune callbacks that write the store and W&B (:mod:`.callbacks`), the shared
latency cache (:mod:`.latency_cache`) and the runner (:mod:`.runner`).
May import: ``search.results``, ``search.config``, ``search.cluster``, ``models``, ``kernels``.
"""
