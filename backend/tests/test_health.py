from __future__ import annotations

import dataclasses
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from httpx2 import Response

from app.main import Settings, create_app
from tests.conftest import closed_port


def test_health_ok_when_both_services_answer(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "postgres": True, "redis": True}


def test_health_degraded_and_quick_when_redis_is_down(settings: Settings) -> None:
    down = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    with TestClient(create_app(down)) as client:
        started = time.monotonic()
        response = client.get("/health")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "postgres": True, "redis": False}
    assert elapsed < 3, f"health check took {elapsed:.1f}s with Redis down"


def test_app_starts_and_reports_postgres_down(settings: Settings) -> None:
    # The lifespan's schema creation must not crash startup when Postgres is down.
    down = dataclasses.replace(
        settings, database_url=f"postgresql://postgres@127.0.0.1:{closed_port()}/app"
    )
    with TestClient(create_app(down)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "postgres": False, "redis": True}


def test_health_is_bounded_when_services_hang(settings: Settings) -> None:
    # Both services accept the connection, then never answer: only our
    # timeouts (Postgres 2 s, Redis 1 s) keep startup and /health from hanging.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    hung = dataclasses.replace(
        settings,
        database_url=f"postgresql://postgres@127.0.0.1:{port}/app",
        redis_url=f"redis://127.0.0.1:{port}/0",
    )

    def probe() -> tuple[float, Response]:
        with TestClient(create_app(hung)) as client:
            started = time.monotonic()
            response = client.get("/health")
            return time.monotonic() - started, response

    pool = ThreadPoolExecutor(1)
    try:
        # A timeout here turns a regression into a failure rather than a hung run.
        elapsed, response = pool.submit(probe).result(timeout=20)
    finally:
        listener.close()  # resets the queued connections, freeing anything stuck
        pool.shutdown(wait=False)
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "postgres": False, "redis": False}
    assert elapsed < 6, f"health check took {elapsed:.1f}s with hung services"
