"""Figure 5 of Cho & Sun (AAAI 2024) in one command: train, meta-test, plot, tabulate.

``python -m benchmarks.figure5 --budget quick`` (``make bench``; ``BUDGET=paper`` for the paper's
budget) trains MetaCPO, MetaTRPO, CPO, CPOCorrected and TRPO on the three task distributions with
3 seeds at equal environment steps (the grids of ``benchmarks/grids/figure5_<budget>.yaml``, run
as OmniSafe experiment grids), meta-tests every saved checkpoint of every run on the same unseen
tasks with the same adaptation rule (:mod:`omnisafe_metacpo.adaptation_rule`), and writes one
three-row PNG per environment and ``meta_test.csv`` / ``meta_test.md``. Stopped and started again,
it trains only what is not finished and meta-tests only what is not cached.

Modules: ``budget`` (the YAML and its grids), ``runs`` (finished or not), ``costs`` (measured
per-step costs for the time estimate), ``scheduler`` (the pool and the progress lines),
``evaluation`` (cached meta-tests), ``results`` (curves and statistics), ``figures``, ``tables``.
"""
