"""peftsweep's sweep system, one subpackage per concept.

Imports run one way (``tests/test_layout.py`` walks them and fails on an upward import or a circle):

    cli -> selection, benchmarks -> engine -> results -> config -> cluster -> models -> kernels

- :mod:`search.cli`: the ``peftsweep`` command, argument wiring only.
- :mod:`search.selection`: ``peftsweep select``: domain shift, similar earlier domains, warm start,
  pilot trials, the decision and its report.
- :mod:`search.benchmarks`: ``peftsweep bench ...`` and the recorded tables they replay.
- :mod:`search.engine`: a sweep run: search space, samplers, MO-ASHA, the Tune trainable and
  callbacks, the runner.
- :mod:`search.results`: what a sweep leaves behind: the Parquet store, Pareto fronts and
  hypervolume, the report, W&B.
- :mod:`search.config`: the sweep config: names, schema, loading.
- :mod:`search.cluster`: connecting to and starting Ray clusters, shared storage.
"""
