"""Test helper: a tiny stand-in for the Hugging Face hub's HTTP API, serving one folder as a model
repo on 127.0.0.1, slowly enough that download progress can be watched.

Serves what `huggingface_hub.snapshot_download` asks for: the repo's info (with `siblings`), the
file tree, and each file (HEAD and GET, with the commit and ETag headers). Other repos are 404.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Repo:
    def __init__(self, repo_id: str, folder: Path, bytes_per_s: float) -> None:
        self.repo_id = repo_id
        self.files = {
            p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()
        }
        self.bytes_per_s = bytes_per_s

    def tree(self) -> list[dict[str, object]]:
        return [
            {"type": "file", "path": name, "size": p.stat().st_size, "oid": _etag(p)}
            for name, p in self.files.items()
        ]

    def info(self) -> dict[str, object]:
        return {
            "id": self.repo_id,
            "modelId": self.repo_id,
            "sha": COMMIT,
            "private": False,
            "siblings": [{"rfilename": name} for name in self.files],
        }


def _etag(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _handler(repo: _Repo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def _json(self, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _missing(self) -> None:
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self) -> tuple[str, str] | None:
            path = unquote(urlparse(self.path).path)
            api = f"/api/models/{repo.repo_id}"
            if path in (api, f"{api}/revision/main", f"{api}/revision/{COMMIT}"):
                return "info", ""
            if path.startswith(f"{api}/tree/"):
                return "tree", ""
            prefix = f"/{repo.repo_id}/resolve/"
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/", 1)[1]
                if name in repo.files:
                    return "file", name
            return None

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._serve(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            route = self._route()
            if route is None:
                return self._missing()
            kind, name = route
            if kind == "info":
                return self._json(repo.info())
            if kind == "tree":
                return self._json(repo.tree())
            data = repo.files[name].read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{_etag(repo.files[name])}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                chunk = max(int(repo.bytes_per_s / 20), 1)
                for at in range(0, len(data), chunk):
                    self.wfile.write(data[at : at + chunk])
                    time.sleep(chunk / repo.bytes_per_s)

    return Handler


@contextmanager
def fake_hub(repo_id: str, folder: Path, bytes_per_s: float = 4e6) -> Iterator[str]:
    """Serve `folder` as `repo_id`; yields the endpoint URL (for HF_ENDPOINT)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(_Repo(repo_id, folder, bytes_per_s)))
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def unreachable_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point `huggingface_hub` at a port where nothing listens, online, with an empty cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
