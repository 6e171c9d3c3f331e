"""Meta-testing: the in-training tester, saved runs, the comparison's adaptation rule, summaries."""
