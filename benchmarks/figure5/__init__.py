"""Figure 5 of Cho & Sun (AAAI 2024) in one command: train, meta-test, plot, tabulate.

``python -m benchmarks.figure5 --budget quick`` (``make bench``; ``BUDGET=paper`` or ``540k`` for
larger budgets) trains MetaCPO, MetaTRPO, CPO, CPOCorrected and TRPO (and MetaCPOPaper in the 540k
budget) on the three task distributions with 3 seeds at equal environment steps (the grids of
``benchmarks/grids/figure5_<budget>.yaml``, run as OmniSafe experiment grids), meta-tests every
saved checkpoint of every run on the same unseen tasks with the same adaptation rule
(:mod:`omnisafe_metacpo.evaluation.rule`), and reports on both cost scales (OmniSafe's cost per
episode and the paper's discounted J_C) and both meta-test modes (the stochastic adaptation
rollouts and the deterministic evaluation): per environment a PNG over training and one over the
adaptation steps, ``meta_test.csv`` / ``.md``, ``verdict.csv`` / ``.md`` (the paper's claim, judged)
and ``training.csv`` / ``.md`` (training diagnostics). Stopped and started again, it trains only
what is not finished (an interrupted meta-learner's run goes on from its checkpoint) and
meta-tests only what is not cached. ``--envs`` / ``--algos`` train a part of the budget;
the report always covers all its finished runs; ``--report-only`` writes it without training or
meta-testing anything.

The same harness runs ablations: variants of an algorithm are grids with a ``label``
(``benchmarks/grids/figure5_ablation_car.yaml``), and ``--steps`` adds the step-by-step report of
the adaptation steps (:mod:`benchmarks.figure5.steps`).

Modules: ``budget`` (the YAML and its grids), ``runs`` (finished, resumable or not), ``costs``
(measured per-step costs for the time estimate), ``scheduler`` (the pool and the progress lines),
``evaluation`` (cached meta-tests), ``results`` (curves and statistics), ``figures``, ``tables``,
``verdict``, ``diagnostics``, ``report`` (all of them from the runs), ``steps``.
"""
