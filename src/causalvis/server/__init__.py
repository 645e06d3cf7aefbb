"""``causalvis serve``: FastAPI experiment server, database, platforms, admin, export."""

from causalvis.server.app import create_app, find_web_dist
from causalvis.server.export import responses_frame

__all__ = ["create_app", "find_web_dist", "responses_frame"]
