"""The FastAPI application: the OpenAI wire format under /v1 over the service database and store."""

from __future__ import annotations

from fastapi import FastAPI

from bnr.service import api_chat, api_files, api_jobs, api_models, dashboard, errors, store
from bnr.service.db import make_engine, upgrade
from bnr.service.settings import ServiceSettings


def create_app(settings: ServiceSettings) -> FastAPI:
    """The app for `settings`: the schema upgraded, half-written uploads cleared, routes and error shapes set."""
    root = settings.store_path
    root.mkdir(parents=True, exist_ok=True)
    upgrade(settings.url)
    store.clear_tmp(root)
    app = FastAPI(title="bnr fine-tuning service", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.store = root
    app.state.engine = make_engine(settings.url)
    errors.install(app)
    for module in (api_files, api_jobs, api_models, api_chat, dashboard):
        app.include_router(module.router)
    return app
