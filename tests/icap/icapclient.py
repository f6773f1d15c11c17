"""A small blocking ICAP client for the tests: sends REQMOD/OPTIONS as a proxy would and
parses the answer (status, headers, encapsulated sections and the de-chunked body).

Ours, not a library: the tests need to send malformed and split requests, previews
that stop for 100 Continue, and to read exactly one response per request on a
persistent connection.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    sections: dict[str, bytes] = field(default_factory=dict)
    body: bytes | None = None

    @property
    def http_status(self) -> int | None:
        """The status of an encapsulated HTTP response (a refusal), if any."""
        raw = self.sections.get("res-hdr")
        return int(raw.split(b" ", 2)[1]) if raw else None

    def http_header(self, name: str, section: str = "req-hdr") -> str | None:
        raw = self.sections.get(section, b"")
        for line in raw.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.decode().lower() == name.lower():
                return v.strip().decode()
        return None


class Client:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.port = port

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        d = self.sock.recv(1 << 18)
        if not d:
            return False
        self.buf += d
        return True

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            if not self._fill():
                raise ConnectionError("closed")
        head, _, self.buf = self.buf.partition(sep)
        return head

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("closed")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self) -> Response:
        head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1])
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        r = Response(status, headers)
        enc = headers.get("encapsulated")
        if not enc:
            return r
        parts = [(n.strip(), int(o)) for n, o in (p.split("=") for p in enc.split(","))]
        for (name, off), (_, end) in zip(parts, parts[1:]):
            r.sections[name] = self._exact(end - off)
        if parts[-1][0] != "null-body":
            body = b""
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._until(b"\r\n")
                    break
                body += self._exact(size)
                self._exact(2)
            r.body = body
        return r

    def expect_closed(self) -> bool:
        try:
            return not self._fill() and not self.buf
        except OSError:
            return True


def reqmod(method: str, url: str, headers: list[tuple[str, str]], body: bytes | None, *,
           preview: int | None = None, allow_204: bool = True, icap_headers: list[tuple[str, str]] = (),
           path: str = "/reqmod", chunk: int = 65536) -> tuple[bytes, bytes]:
    """(what to send first, what to send after a 100 Continue) for one REQMOD."""
    http = f"{method} {url} HTTP/1.1\r\n".encode() + b"".join(
        f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n"
    h = [f"REQMOD icap://127.0.0.1{path} ICAP/1.0", "Host: 127.0.0.1"]
    if allow_204:
        h.append("Allow: 204")
    h += [f"{k}: {v}" for k, v in icap_headers]
    if body is None:
        h.append(f"Encapsulated: req-hdr=0, null-body={len(http)}")
        return ("\r\n".join(h) + "\r\n\r\n").encode() + http, b""

    def chunks(b: bytes) -> bytes:
        return b"".join(b"%x\r\n" % len(b[i:i + chunk]) + b[i:i + chunk] + b"\r\n" for i in range(0, len(b), chunk))

    h.append(f"Encapsulated: req-hdr=0, req-body={len(http)}")
    if preview is None:
        return ("\r\n".join(h) + "\r\n\r\n").encode() + http + chunks(body) + b"0\r\n\r\n", b""
    h.append(f"Preview: {preview}")
    first = ("\r\n".join(h) + "\r\n\r\n").encode() + http + chunks(body[:preview])
    if len(body) <= preview:
        return first + b"0; ieof\r\n\r\n", b""
    return first + b"0\r\n\r\n", chunks(body[preview:]) + b"0\r\n\r\n"


def exchange(c: Client, first: bytes, rest: bytes) -> Response:
    """Send a REQMOD, answer a 100 Continue with the rest of the body, return the final answer."""
    c.send(first)
    r = c.read()
    if r.status == 100:
        c.send(rest)
        r = c.read()
    return r
