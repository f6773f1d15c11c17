"""A loopback HTTPS sink for the proxy benchmark (run as its own process).

    python -m benchlib.sink --cert C --key K --port-file F [--sse-delay S]

HTTP/1.1 with keep-alive and Content-Length bodies (what httpx sends).  Any POST/PUT is
read fully and answered with a small JSON document; with `x-bench-hash: 1` the answer
carries the body's SHA-256 so the client can tell whether the proxy changed it.
`GET /sse` answers text/event-stream: one event at once, then after --sse-delay seconds
three more, chunked — the shape of a chat answer.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import ssl
from pathlib import Path


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return method, target, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return b""


def make_handler(sse_delay: float):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = await _read_head(reader)
                if req is None:
                    break
                method, target, headers = req
                body = await _read_body(reader, headers)
                if target.split("?")[0].endswith("/sse"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")

                    def chunk(data: bytes) -> bytes:
                        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

                    writer.write(chunk(b'data: {"delta": "first"}\n\n'))
                    await writer.drain()
                    await asyncio.sleep(sse_delay)
                    for i in range(3):
                        writer.write(chunk(f'data: {{"delta": "{i}"}}\n\n'.encode()))
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    continue
                doc = {"received": len(body)}
                if headers.get("x-bench-hash") == "1":
                    doc["sha256"] = hashlib.sha256(body).hexdigest()
                payload = json.dumps(doc).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             + f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    return handle


async def main(args: argparse.Namespace) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    server = await asyncio.start_server(make_handler(args.sse_delay), "127.0.0.1", 0, ssl=ctx,
                                        backlog=256, limit=1 << 20)
    port = server.sockets[0].getsockname()[1]
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(str(port))
    tmp.rename(args.port_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--sse-delay", type=float, default=0.5)
    try:
        asyncio.run(main(ap.parse_args()))
    except KeyboardInterrupt:
        pass
