"""A loopback web server for tests: files under ROOT with HEAD, ETag, Last-Modified and ``Range: bytes=a-b``.

Python's http.server answers no Range requests, which GDAL's /vsicurl/ needs. Run as a
separate process (``python range_server.py ROOT LOG``; it prints its port): a server
thread in the test process would wait on the GIL that a GDAL read holds. Each request
is appended to LOG as ``METHOD path range``.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


def handler(root: Path, log: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:  # noqa: N802
            self.respond(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self.respond(body=True)

        def respond(self, body: bool) -> None:
            name = unquote(urlparse(self.path).path)
            with open(log, "a") as fh:
                fh.write(f"{self.command} {name} {self.headers.get('Range', '-')}\n")
            path = root / name.lstrip("/")
            if not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            start, end, status = 0, len(data) - 1, 200
            wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if wanted and body:
                start, status = int(wanted[1]), 206
                end = min(int(wanted[2]), len(data) - 1) if wanted[2] else len(data) - 1
            self.send_response(status)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
            self.send_header("Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True))
            self.end_headers()
            if body:
                self.wfile.write(data[start : end + 1])

    return Handler


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(Path(sys.argv[1]), Path(sys.argv[2])))
    print(server.server_port, flush=True)
    server.serve_forever()
