"""The study folder contract (docs/study-folder.md), with no torch import.

``layout`` has every path (``StudyPaths``), atomic writes and the stamp API; ``assets`` the
content-hashed public images; ``seeds`` name-derived seeds and opaque ids. Every other
package reads and writes the study folder through this one.
"""
