"""The study folder contract (docs/study-folder.md), with no torch import.

One module per file format, each the only reader and writer of its files: ``layout`` (every
path and file-name constant, atomic writes, the stamp API), ``units`` (the ``Unit`` identity
and ``units.json``), ``trials`` (``trials_base.csv``, ``trials.csv``), ``sessions``
(``bundle/sessions.json``, ``manifest.json``), ``exemplars``, ``occlusion`` (the sweep maps),
``activations`` (the scan's index and shards), ``reports`` (``report/*.json`` and the
observers' per-trial decisions), ``assets`` (content-hashed public images)
and ``seeds`` (name-derived seeds and opaque ids). Every other package reads and writes the
study folder through this one.
"""
