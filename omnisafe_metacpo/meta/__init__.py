"""The maths of Meta-CPO: inner adaptation (eq. 9), the meta step (eq. 12), what they record."""
