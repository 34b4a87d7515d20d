"""Specification of src.tracking.stores: the store behind a tracking URI probed before any run."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from src.config.errors import UserError
from src.tracking.stores import check_server


class Health(BaseHTTPRequestHandler):
    """GET /health as `mlflow server` answers it, remembering the Authorization header."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        Health.seen.append(self.headers.get("Authorization"))
        code = 200 if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        """Quiet: the test reads what the server saw, not its log."""


@pytest.fixture
def server() -> Iterator[int]:
    httpd = HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Health.seen.clear()
    yield httpd.server_address[1]
    httpd.shutdown()


def test_a_server_that_answers_its_health_check_is_reachable(server: int) -> None:
    check_server(f"http://127.0.0.1:{server}", "tracking.uri")
    assert Health.seen == [None]


def test_credentials_in_the_uri_are_sent_as_basic_auth_not_taken_for_the_host(
    server: int,
) -> None:
    check_server(f"http://admin:p%40ss@127.0.0.1:{server}/", "tracking.uri")
    assert Health.seen == ["Basic " + base64.b64encode(b"admin:p@ss").decode()]


def test_a_closed_port_is_one_line_naming_the_key() -> None:
    with pytest.raises(UserError, match=r"cannot reach the MLflow tracking server tracking\.uri"):
        check_server("http://127.0.0.1:9", "tracking.uri")
