"""Participants' responses: the database (SQLAlchemy + Alembic), the exclusion rule set,
and loading them for analysis — without the web server."""
