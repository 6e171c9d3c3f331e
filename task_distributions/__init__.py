"""Non-stationary task distributions for Safety-Gymnasium (Table 1 of Meta-CPO)."""
