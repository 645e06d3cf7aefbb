"""Machine observers, an automated causal-interpretability score, simulated participants
and power analysis (docs/observers.md). Submodules import their heavy dependencies lazily.
"""
