"use client";

import { useCallback, useEffect, useRef, useState } from "react";

// Inlined at compile time from next.config.ts (`env`); empty when unknown.
// The backend's named URL: the same whatever port the backend moves to.
const API_URL = (process.env.NEXT_PUBLIC_API_URL ?? "").replace(/\/+$/, "");
const PORTS = [
  { key: "backend", label: "Backend", value: process.env.BACKEND_PORT ?? "" },
  { key: "frontend", label: "Frontend", value: process.env.FRONTEND_PORT ?? "" },
  { key: "postgres", label: "PostgreSQL", value: process.env.POSTGRES_PORT ?? "" },
  { key: "redis", label: "Redis", value: process.env.REDIS_PORT ?? "" },
];

const REQUEST_TIMEOUT_MS = 15_000;

type VisitResult = {
  visit: { id: number; created_at: string };
  visits_in_postgres: number;
  redis_counter: number;
  backend_port: number;
};

type State =
  | { status: "loading"; last: VisitResult | null }
  | { status: "ok"; last: VisitResult }
  | { status: "error"; last: VisitResult | null; error: string };

function isVisitResult(body: unknown): body is VisitResult {
  const b = body as VisitResult | null;
  return (
    typeof b === "object" &&
    b !== null &&
    typeof b.visit === "object" &&
    b.visit !== null &&
    typeof b.visit.id === "number" &&
    typeof b.visits_in_postgres === "number" &&
    typeof b.redis_counter === "number" &&
    typeof b.backend_port === "number"
  );
}

async function recordVisit(): Promise<VisitResult> {
  if (!API_URL) {
    throw new Error(
      "NEXT_PUBLIC_API_URL is not set: start the stack with `cargo xtask dev` " +
        "(it writes .env.runtime) or set it in the environment.",
    );
  }
  const url = `${API_URL}/api/visits`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    throw new Error(
      `Could not reach the backend at ${url} (${reason}). ` +
        `Is it running, and does its CORS policy allow ${window.location.origin}?`,
    );
  }
  const text = await response.text();
  if (!response.ok) {
    throw new Error(
      `POST ${url} answered HTTP ${response.status} ${response.statusText}: ${text.slice(0, 300)}`,
    );
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`POST ${url} did not answer JSON: ${text.slice(0, 300)}`);
  }
  if (!isVisitResult(body)) {
    throw new Error(`POST ${url} answered an unexpected shape: ${text.slice(0, 300)}`);
  }
  return body;
}

export default function Visits() {
  const [state, setState] = useState<State>({ status: "loading", last: null });
  const started = useRef(false);

  const run = useCallback(() => {
    setState((s) => ({ status: "loading", last: s.last }));
    recordVisit().then(
      (result) => setState({ status: "ok", last: result }),
      (err: unknown) =>
        setState((s) => ({
          status: "error",
          last: s.last,
          error: err instanceof Error ? err.message : String(err),
        })),
    );
  }, []);

  // One visit per page load (the ref keeps React's dev double-effect from
  // recording two).
  useEffect(() => {
    if (started.current) return;
    started.current = true;
    run();
  }, [run]);

  const last = state.last;
  // The backend says its own port with each visit: it may have moved since
  // this page was compiled.
  const ports = PORTS.map((p) =>
    p.key === "backend" && last ? { ...p, value: String(last.backend_port) } : p,
  );

  return (
    <>
      <section className="card">
        <div className="card-head">
          <h2>Latest visit</h2>
          <span className={`badge badge-${state.status}`} data-testid="status">
            {state.status}
          </span>
        </div>

        {state.status === "error" && (
          <p className="error" role="alert" data-testid="error">
            {state.error}
          </p>
        )}

        <dl className={`stats${state.status === "ok" ? "" : " stale"}`}>
          <div>
            <dt>Visit id</dt>
            <dd data-testid="visit-id">{last ? last.visit.id : "—"}</dd>
          </div>
          <div>
            <dt>Visits in PostgreSQL</dt>
            <dd data-testid="postgres-count">{last ? last.visits_in_postgres : "—"}</dd>
          </div>
          <div>
            <dt>Redis counter</dt>
            <dd data-testid="redis-counter">{last ? last.redis_counter : "—"}</dd>
          </div>
          <div>
            <dt>Answered by port</dt>
            <dd data-testid="backend-port">{last ? last.backend_port : "—"}</dd>
          </div>
        </dl>
        {last && (
          <p className="muted small">
            Recorded at {new Date(last.visit.created_at).toLocaleString()}
          </p>
        )}

        <button
          type="button"
          className="button"
          data-testid="again"
          onClick={run}
          disabled={state.status === "loading"}
        >
          Record another visit
        </button>
      </section>

      <section className="card">
        <h2>Stack</h2>
        <table className="ports">
          <tbody>
            {ports.map((p) => (
              <tr key={p.key}>
                <th scope="row">{p.label} port</th>
                <td data-testid={`port-${p.key}`}>{p.value || "—"}</td>
              </tr>
            ))}
            <tr>
              <th scope="row">Backend URL</th>
              <td data-testid="backend-url">{API_URL || "—"}</td>
            </tr>
          </tbody>
        </table>
      </section>
    </>
  );
}
