from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from app.main import Settings, create_app
from tests.conftest import FRONTEND_PORT, FRONTEND_PUBLIC_URL

GOOD_ORIGINS = [
    f"http://localhost:{FRONTEND_PORT}",
    f"http://127.0.0.1:{FRONTEND_PORT}",
    FRONTEND_PUBLIC_URL,
]
BAD_ORIGINS = [
    "http://evil.example",
    f"http://localhost:{FRONTEND_PORT + 1}",
    # Another checkout's frontend, and another port under the same name.
    "http://frontend.c2.localhost:7300",
    "http://frontend.c1.localhost:7301",
]


def preflight(client: TestClient, origin: str) -> dict[str, str]:
    response = client.options(
        "/api/visits",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    return dict(response.headers)


@pytest.mark.parametrize("origin", GOOD_ORIGINS)
def test_frontend_origin_is_allowed(client: TestClient, origin: str) -> None:
    assert preflight(client, origin).get("access-control-allow-origin") == origin
    response = client.get("/health", headers={"Origin": origin})
    assert response.headers.get("access-control-allow-origin") == origin


@pytest.mark.parametrize("origin", BAD_ORIGINS)
def test_other_origins_are_refused(client: TestClient, origin: str) -> None:
    assert "access-control-allow-origin" not in preflight(client, origin)
    response = client.get("/health", headers={"Origin": origin})
    assert "access-control-allow-origin" not in response.headers


def test_no_origin_allowed_without_frontend_port(settings: Settings) -> None:
    no_frontend = dataclasses.replace(settings, frontend_port=None, frontend_public_url=None)
    with TestClient(create_app(no_frontend)) as client:
        for origin in GOOD_ORIGINS:
            assert "access-control-allow-origin" not in preflight(client, origin)


def test_settings_read_ports_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTEND_PORT", "41234")
    monkeypatch.setenv("BACKEND_PORT", "41235")
    monkeypatch.setenv("FRONTEND_PUBLIC_URL", "http://frontend.my-wt.localhost:7301")
    settings = Settings.from_env()
    assert settings.backend_port == 41235
    assert settings.cors_origins == [
        "http://localhost:41234",
        "http://127.0.0.1:41234",
        "http://frontend.my-wt.localhost:7301",
    ]

    monkeypatch.delenv("FRONTEND_PORT")
    monkeypatch.delenv("FRONTEND_PUBLIC_URL")
    assert Settings.from_env().cors_origins == []
