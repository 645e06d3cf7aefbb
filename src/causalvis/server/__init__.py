"""``causalvis serve``: FastAPI experiment server, platforms, admin dashboard.

Imports nothing eagerly: import the submodule you need (``causalvis.server.app`` for
``create_app``), so loading one part never drags in the rest or closes an import cycle.
The database and the export live in :mod:`causalvis.responses`.
"""
