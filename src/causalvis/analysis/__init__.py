"""Analysis of responses: load (CSV or a study's database), exclusion, statistics with
honest uncertainty, contrasts, error consistency, difficulty, figures and the report.

See docs/analysis.md. Heavy modules (matplotlib figures, the report) are imported by the
caller when needed; the numeric helpers live in :mod:`causalvis.analysis.stats`.
"""

from causalvis.analysis.stats import bootstrap_ci, crossed_bootstrap_ci, error_consistency, sem2

__all__ = ["bootstrap_ci", "crossed_bootstrap_ci", "error_consistency", "sem2"]
