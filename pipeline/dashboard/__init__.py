"""The web dashboard (`agentic dashboard`): queues, tasks, workers, limits and pipeline
runs in a browser, served by one process with nothing beside Redis. Needs the
`dashboard` extra (Starlette, uvicorn, Jinja2)."""

from .app import DashboardOptions, create_app

__all__ = ["DashboardOptions", "create_app"]
