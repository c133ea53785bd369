"""A real MCP client for the tests of `cargo xtask mcp`: the official Python SDK
(`mcp`, pinned to 2.3.0 by the test that installs it), driven one step at a time.

    python client.py [--mode auto|legacy|2026-07-28] -- COMMAND [ARG...]

starts COMMAND as an MCP server over stdio (in this process's directory and
environment), then reads steps from stdin, one JSON object a line, and answers
each with one JSON line on stdout:

    {"list": {}}
        -> {"tools": [each tool as the server described it]}
    {"call": NAME, "arguments": {...}, "progress": true}
        -> {"result": {"isError", "content", "structuredContent"}, "progress": [...]}
    {"call": NAME, "arguments": {...}, "cancel_after_progress": N}
        -> {"cancelled": true, "progress": [...]}: the call is cancelled (the SDK
           sends notifications/cancelled) from its Nth progress notification
    {"request": METHOD, "params": {...}}
        -> {"result": {...}}: any request, as the SDK sends it in the era
           negotiated (params beyond `_meta` are dropped: a malformed request)
    any step the server refuses -> {"error": {"code", "message", "data"}}

Progress entries are {"progress", "total", "message"}. The first line out says
what was negotiated: {"protocolVersion", "serverInfo"}. End of stdin closes
the connection the SDK's way (close the server's stdin, wait, then signal it).
The SDK validates every result against the negotiated revision and each
structured result against its tool's output schema: a wrong one fails here.
"""

import argparse
import json
import os
import sys

import anyio
from mcp import Client, StdioServerParameters, types
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter


def say(answer):
    print(json.dumps(answer), flush=True)


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def call(client, step):
    progress = []
    cancel_after = step.get("cancel_after_progress")
    wants_progress = step.get("progress") or cancel_after is not None
    with anyio.CancelScope() as scope:

        async def on_progress(done, total, message):
            progress.append({"progress": done, "total": total, "message": message})
            if cancel_after is not None and len(progress) >= cancel_after:
                scope.cancel()  # as an agent's user would: the SDK tells the server

        result = await client.call_tool(
            step["call"],
            step.get("arguments", {}),
            read_timeout_seconds=step.get("timeout", 60),
            progress_callback=on_progress if wants_progress else None,
        )
        return {"result": dump(result), "progress": progress}
    return {"cancelled": True, "progress": progress}


async def serve_steps(client):
    while line := await anyio.to_thread.run_sync(sys.stdin.readline):
        step = json.loads(line)
        try:
            if "list" in step:
                tools = await client.list_tools()
                say({"tools": [dump(tool) for tool in tools.tools]})
            elif "request" in step:
                request = types.Request(method=step["request"], params=step.get("params", {}))
                say({"result": await client.session.send_request(request, TypeAdapter(dict))})
            else:
                say(await call(client, step))
        except MCPError as e:
            say({"error": {"code": e.code, "message": e.message, "data": e.data}})


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="auto", help="auto (probe, then fall back), legacy, or a revision")
    parser.add_argument("command", nargs="+", help="the server to start, after --")
    args = parser.parse_args()
    server = StdioServerParameters(
        command=args.command[0], args=args.command[1:], cwd=os.getcwd(), env=dict(os.environ)
    )
    async with Client(server, mode=args.mode) as client:
        info = client.server_info
        say({"protocolVersion": client.protocol_version, "serverInfo": dump(info) if info else None})
        await serve_steps(client)


if __name__ == "__main__":
    anyio.run(main)
