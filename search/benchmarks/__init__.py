"""``peftsweep bench ...``: benchmarks that print figures (never timed unit tests), and their tables.

Owns: :mod:`.kernel` (MSDA kernels), :mod:`.latency` (deployed latency of the PEFT methods),
:mod:`.samplers` (``bench search``: hypervolume vs trials per sampler), :mod:`.engine_replay`
(``bench search --engine``: recorded trials through Ray Tune, the searcher and MO-ASHA) and its
simulated-time twin :mod:`.replay_sim` (choosing early-stopping settings), the recorders of the
tables they replay (:mod:`.record_real_grid`, :mod:`.make_recorded_trials`, tables in ``tables/``)
and the recorded figures of the search benchmarks (``*.txt``). Figures of the kernels and models
are recorded beside them (``kernels/benchmarks/``, ``models/benchmarks/``).
May import: ``search.engine`` and everything below it; never ``search.cli``.
"""
