from __future__ import annotations

import dataclasses
from datetime import datetime

from fastapi.testclient import TestClient

from app.main import Settings, create_app
from tests.conftest import BACKEND_PORT, closed_port


def test_each_post_adds_one_to_both_counters(client: TestClient) -> None:
    first = client.post("/api/visits")
    second = client.post("/api/visits")
    assert first.status_code == second.status_code == 200
    a, b = first.json(), second.json()

    assert set(a) == {"visit", "visits_in_postgres", "redis_counter", "backend_port"}
    assert set(a["visit"]) == {"id", "created_at"}
    assert b["visits_in_postgres"] == a["visits_in_postgres"] + 1
    assert b["redis_counter"] == a["redis_counter"] + 1
    assert b["visit"]["id"] > a["visit"]["id"]
    assert a["backend_port"] == BACKEND_PORT
    assert datetime.fromisoformat(a["visit"]["created_at"]).tzinfo is not None


def test_get_lists_the_new_visit_first(client: TestClient) -> None:
    created = client.post("/api/visits").json()
    response = client.get("/api/visits")
    assert response.status_code == 200
    listing = response.json()

    assert set(listing) == {"recent", "visits_in_postgres", "redis_counter"}
    assert listing["recent"][0] == created["visit"]
    assert listing["visits_in_postgres"] == created["visits_in_postgres"]
    assert listing["redis_counter"] == created["redis_counter"]


def test_get_returns_at_most_five_newest(client: TestClient) -> None:
    ids = [client.post("/api/visits").json()["visit"]["id"] for _ in range(6)]
    recent = [visit["id"] for visit in client.get("/api/visits").json()["recent"]]
    assert recent == sorted(ids, reverse=True)[:5]


def test_post_with_redis_down_is_503_and_inserts_nothing(
    client: TestClient, settings: Settings
) -> None:
    before = client.get("/api/visits").json()["visits_in_postgres"]
    down = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    with TestClient(create_app(down)) as broken:
        assert broken.post("/api/visits").status_code == 503
    assert client.get("/api/visits").json()["visits_in_postgres"] == before
