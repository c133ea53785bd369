import path from "node:path";
import dotenv from "dotenv";
import type { NextConfig } from "next";

// `cargo xtask dev` writes the stack's ports and URLs to ../.env.runtime and
// also passes them in the environment. Variables already set in the
// environment win (no override); a missing file is fine (values stay empty).
dotenv.config({
  path: path.join(__dirname, "..", ".env.runtime"),
  override: false,
  quiet: true,
});

const env = (name: string): string => process.env[name] ?? "";

const nextConfig: NextConfig = {
  // Inlined into the browser bundle at compile time.
  env: {
    NEXT_PUBLIC_API_URL: env("NEXT_PUBLIC_API_URL"),
    BACKEND_PORT: env("BACKEND_PORT"),
    FRONTEND_PORT: env("FRONTEND_PORT"),
    POSTGRES_PORT: env("POSTGRES_PORT"),
    REDIS_PORT: env("REDIS_PORT"),
  },
  // The floating "N" badge overlaps the page in screenshots; errors still show.
  devIndicators: false,
  // The page may be opened as http://127.0.0.1:<port> as well as localhost;
  // its named URL (http://frontend.<checkout>.localhost:<proxy port>) needs
  // no entry: next dev allows every *.localhost origin.
  allowedDevOrigins: ["127.0.0.1", "localhost"],
  // Keep Turbopack from looking for a workspace root above frontend/.
  turbopack: { root: __dirname },
};

export default nextConfig;
