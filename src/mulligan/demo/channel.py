"""A stand-in for the team's chat channel: a local webhook that keeps what it is sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class TeamChannel:
    """An HTTP server on 127.0.0.1 accepting Slack-style ``{"text": ...}`` posts."""

    def __init__(self, on_message: Callable[[str], None] | None = None):
        self.messages: list[dict] = []
        self.content_types: list[str] = []
        self.on_message = on_message
        channel = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    payload = {"text": body.decode(errors="replace")}
                channel.messages.append(payload)
                channel.content_types.append(self.headers.get("Content-Type", ""))
                if channel.on_message:
                    channel.on_message(str(payload.get("text", "")))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/team"

    def __enter__(self) -> "TeamChannel":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
