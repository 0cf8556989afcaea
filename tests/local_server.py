"""A tiny HTTP server on 127.0.0.1 for download tests (no network is touched).

``LocalServer.files`` maps a URL path to the bytes to serve; ``LocalServer.short`` maps a path
to the number of bytes actually sent while ``Content-Length`` announces all of them (a
connection that drops mid-file).  :func:`route_https` makes ``https://weights.test/...`` URLs
(which cards require) reach this server through the engine's real download code.
"""

from __future__ import annotations

import http.server
import threading
from typing import Any

from napari_cxseg.models import downloads

#: The engine's real opener, kept before any test replaces it.
_REAL_OPEN = downloads._open
HTTPS_HOST = "https://weights.test"


class LocalServer:
    """Serve ``files`` over http on a free loopback port, in a daemon thread."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.short: dict[str, int] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: server.short.get(self.path, len(body))])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def route_https(monkeypatch: Any, server: LocalServer) -> None:
    """Send ``https://weights.test/<path>`` to ``server`` via the real urllib opener."""

    def _open(url: str, timeout: float) -> Any:
        assert url.startswith(HTTPS_HOST), f"test tried to reach {url}"
        return _REAL_OPEN(server.url + url[len(HTTPS_HOST):], timeout)

    monkeypatch.setattr(downloads, "_open", _open)
