"""Method selection for a new domain (``peftsweep select``), without a human.

Owns: domain shift of backbone features (:mod:`.shift`), similar earlier domains
(:mod:`.similarity`, :mod:`.domain_stats`), warm start from their best configurations
(:mod:`.warmstart`), the pilot trials (:mod:`.pilots`), the budget decision (:mod:`.decision`),
its inputs and outcome (:mod:`.outcome`) and report (:mod:`.report`).
May import: ``search.engine`` and everything below it; never ``search.cli``.
"""
