import Visits from "./visits";

export default function Page() {
  return (
    <main className="page">
      <header className="header">
        <h1>Stack check</h1>
        <p className="muted">
          Each page load records a visit: the browser calls the backend, which
          stores it in PostgreSQL and bumps a counter in Redis.
        </p>
      </header>
      <Visits />
    </main>
  );
}
