"""`bnr serve`: an OpenAI-compatible fine-tuning service with the provider's defense on every job.

Layers inside the package: `settings` (the service config), `db` (SQLAlchemy tables, Alembic migrations),
`api_*` (the FastAPI routes of the OpenAI wire format), `queue` (lease, heartbeat, reaper), `worker` (claims jobs
and runs each in its own subprocess), `runner` (one job: the same user-job code as `bnr finetune`, then the safety
gate and the release), `gate` (the safety probe), `admin` (organizations, keys, usage, `prepare-base`).
"""
