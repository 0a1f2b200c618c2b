"""What a sweep leaves behind, and every view of it.

Owns: the Parquet results store (:mod:`.store`), Pareto fronts, hypervolume and knee
(:mod:`.pareto`), the output folder's other files (:mod:`.sweep_files`), the HTML/PNG report
(:mod:`.report`) and W&B logging (:mod:`.wandb_log`).
May import: ``search.config``, ``search.cluster``, ``models``, ``kernels`` (never the engine:
results are read the same way whether a sweep is running, finished, or was run elsewhere).
"""
