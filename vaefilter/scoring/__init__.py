"""Scoring rows: importance-sampled log p(x) in fixed-shape passes, the proposal refit, the posterior search, per-row noise."""
