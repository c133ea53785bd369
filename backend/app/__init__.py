"""Backend API of the dev stack: FastAPI over Postgres and Redis."""
