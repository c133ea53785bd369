"""Fixtures: the tests run against the real Postgres and Redis named by
DATABASE_URL and REDIS_URL (started by the test harness, not by the tests)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

# Captured before anything imports app.main, whose load_dotenv() would fill
# these from the repo's .env.runtime and silently aim the tests at the dev services.
SERVICE_ENV = {name: os.environ.get(name, "") for name in ("DATABASE_URL", "REDIS_URL")}

from fastapi.testclient import TestClient  # noqa: E402

from app.main import Settings, create_app  # noqa: E402

FRONTEND_PORT = 53000  # arbitrary: the CORS tests only need a known value
BACKEND_PORT = 58000
FRONTEND_PUBLIC_URL = "http://frontend.c1.localhost:7300"


@pytest.fixture(scope="session")
def settings() -> Settings:
    missing = [name for name, value in SERVICE_ENV.items() if not value]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not set: these tests need a running Postgres and Redis, e.g. "
            "DATABASE_URL=postgresql://postgres@127.0.0.1:5432/app REDIS_URL=redis://127.0.0.1:6379/0",
            pytrace=False,
        )
    return Settings(
        database_url=SERVICE_ENV["DATABASE_URL"],
        redis_url=SERVICE_ENV["REDIS_URL"],
        backend_port=BACKEND_PORT,
        frontend_port=FRONTEND_PORT,
        frontend_public_url=FRONTEND_PUBLIC_URL,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    # `with` runs the lifespan, i.e. the schema creation, like uvicorn does.
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def closed_port() -> int:
    """A local port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
