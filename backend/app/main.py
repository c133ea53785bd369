"""FastAPI app: a health check and a visit counter backed by Postgres and Redis."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import psycopg
import redis
from dotenv import load_dotenv
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from psycopg.rows import class_row
from pydantic import BaseModel
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.concurrency import run_in_threadpool

# Uvicorn's logger, so warnings show up formatted in the dev runner's log.
log = logging.getLogger("uvicorn.error")

# The runner passes its variables in the environment and also writes them to
# <repo>/.env.runtime. The file only fills gaps (override=False), so the
# process environment wins and running uvicorn by hand still works.
ENV_FILE = Path(__file__).resolve().parents[2] / ".env.runtime"
load_dotenv(ENV_FILE, override=False)

# psycopg (like libpq) raises any connect_timeout below 2 s to 2 s.
PG_CONNECT_TIMEOUT_S = 2
REDIS_TIMEOUT_S = 1.0
COUNTER_KEY = "visits:count"
SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS visits (
    id serial PRIMARY KEY,
    created_at timestamptz DEFAULT now()
)
"""


class ServiceNotConfigured(RuntimeError):
    """A service URL is missing from the environment."""


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    backend_port: int | None = None
    frontend_port: int | None = None
    # The frontend's named URL (http://frontend.<checkout>.localhost:<proxy port>).
    frontend_public_url: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            redis_url=os.environ.get("REDIS_URL") or None,
            backend_port=_int_env("BACKEND_PORT"),
            frontend_port=_int_env("FRONTEND_PORT"),
            frontend_public_url=os.environ.get("FRONTEND_PUBLIC_URL") or None,
        )

    @property
    def cors_origins(self) -> list[str]:
        # Exactly the dev frontend, under every name a browser may use (its
        # port on localhost and 127.0.0.1, and its named URL); never "*".
        origins = []
        if self.frontend_port is not None:
            origins += [
                f"http://localhost:{self.frontend_port}",
                f"http://127.0.0.1:{self.frontend_port}",
            ]
        if self.frontend_public_url:
            url = urlsplit(self.frontend_public_url)
            origins.append(f"{url.scheme}://{url.netloc}".lower())
        return origins


class Services:
    """Opens short-lived Postgres/Redis connections per request (no pools: dev scale)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def _connect_pg(self, **kwargs: Any) -> psycopg.Connection[Any]:
        if not self.settings.database_url:
            raise ServiceNotConfigured("DATABASE_URL is not set")
        return psycopg.connect(
            self.settings.database_url, connect_timeout=PG_CONNECT_TIMEOUT_S, **kwargs
        )

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            # Own autocommit connection: a caller's rolled-back transaction
            # must not undo the DDL after we have marked it done.
            with self._connect_pg(autocommit=True) as conn:
                conn.execute(SCHEMA_SQL)
            self._schema_ready = True

    @contextmanager
    def postgres(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection with the schema in place; commits on success, rolls back on error."""
        self.ensure_schema()  # lazily, in case Postgres was down at startup
        with self._connect_pg() as conn:
            yield conn

    def redis(self) -> redis.Redis:
        if not self.settings.redis_url:
            raise ServiceNotConfigured("REDIS_URL is not set")
        # Timeouts bound both connect and reply (redis-py waits forever by
        # default); one attempt, no backoff: /health must answer quickly.
        return redis.Redis.from_url(
            self.settings.redis_url,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )

    def postgres_ok(self) -> bool:
        try:
            with self._connect_pg() as conn:
                conn.execute("SELECT 1")
            return True
        except Exception as exc:  # any failure just means "not healthy"
            log.warning("postgres health check failed: %s", exc)
            return False

    def redis_ok(self) -> bool:
        try:
            with self.redis() as client:
                return bool(client.ping())
        except Exception as exc:
            log.warning("redis health check failed: %s", exc)
            return False


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    postgres: bool
    redis: bool


class Visit(BaseModel):
    id: int
    created_at: datetime


class VisitCreated(BaseModel):
    visit: Visit
    visits_in_postgres: int
    redis_counter: int
    backend_port: int | None


class VisitList(BaseModel):
    recent: list[Visit]
    visits_in_postgres: int
    redis_counter: int


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
router = APIRouter()


# Sync endpoints: FastAPI runs them in a threadpool, so blocking I/O is fine.
@router.get("/health")
def health(services: ServicesDep, response: Response) -> Health:
    pg_ok, redis_ok = services.postgres_ok(), services.redis_ok()
    ok = pg_ok and redis_ok
    response.status_code = 200 if ok else 503
    return Health(status="ok" if ok else "degraded", postgres=pg_ok, redis=redis_ok)


@router.post("/api/visits")
def create_visit(services: ServicesDep) -> VisitCreated:
    with services.postgres() as conn, services.redis() as client:
        cur = conn.cursor(row_factory=class_row(Visit))
        visit = cur.execute(
            "INSERT INTO visits DEFAULT VALUES RETURNING id, created_at"
        ).fetchone()
        row = conn.execute("SELECT count(*) FROM visits").fetchone()
        assert visit is not None and row is not None
        # INCR before the commit: if Redis fails, the insert rolls back and
        # the two counts keep moving together.
        counter = int(client.incr(COUNTER_KEY))
    return VisitCreated(
        visit=visit,
        visits_in_postgres=row[0],
        redis_counter=counter,
        backend_port=services.settings.backend_port,
    )


@router.get("/api/visits")
def list_visits(services: ServicesDep) -> VisitList:
    with services.postgres() as conn, services.redis() as client:
        cur = conn.cursor(row_factory=class_row(Visit))
        recent = cur.execute(
            "SELECT id, created_at FROM visits ORDER BY id DESC LIMIT 5"
        ).fetchall()
        row = conn.execute("SELECT count(*) FROM visits").fetchone()
        assert row is not None
        counter = int(client.get(COUNTER_KEY) or 0)
    return VisitList(recent=recent, visits_in_postgres=row[0], redis_counter=counter)


async def service_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # A down or unconfigured dependency is a 503, not a 500 with a traceback.
    log.warning("%s %s: dependency unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": f"dependency unavailable: {exc}"}, status_code=503)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    try:
        await run_in_threadpool(services.ensure_schema)
    except (psycopg.Error, ServiceNotConfigured) as exc:
        # Don't block startup (and /health) on Postgres; retried on first use.
        log.warning("schema not created at startup (%s); will retry on first use", exc)
    yield


def create_app(settings: Settings) -> FastAPI:
    """Build the app from explicit settings, so tests can pass their own."""
    app = FastAPI(title="backend", lifespan=lifespan)
    app.state.services = Services(settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["*"],
    )
    for exc_type in (psycopg.OperationalError, redis.RedisError, ServiceNotConfigured):
        app.add_exception_handler(exc_type, service_unavailable)
    app.include_router(router)
    return app


settings = Settings.from_env()
app = create_app(settings)
