"""A local stand-in for the Hugging Face Hub API: just what ``create_repo`` and ``upload_folder`` call
(repo creation, the pre-upload check, the commit; files are answered "regular", so they travel inline in
the commit and no LFS/Xet storage is needed). Tests point ``HfApi(endpoint=…)`` / ``HF_ENDPOINT`` at it:
nothing leaves the machine."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

TOKEN = "hf_standin_secret_token_0123456789"


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        self.validated: list[str] = []


def _handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorised(self) -> bool:
            auth = self.headers.get("Authorization")
            state.auth.append(auth)
            if auth != f"Bearer {TOKEN}":
                self._send(401, {"error": "Invalid credentials in Authorization header"})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(("GET", self.path))
            self._send(404, {"error": "not in the stand-in"})

        def do_POST(self) -> None:  # noqa: N802
            state.requests.append(("POST", self.path))
            body = self._body()
            if not self._authorised():
                return
            base = f"http://{self.headers.get('Host')}"
            if self.path == "/api/validate-yaml":  # the README's front matter must be YAML mapping
                content = json.loads(body).get("content") or ""
                m = re.match(r"^---\n(.*?)\n---", content, re.S)
                try:
                    ok = m is not None and isinstance(yaml.safe_load(m.group(1)), dict)
                except yaml.YAMLError:
                    ok = False
                state.validated.append(content)
                return self._send(200 if ok else 400, {"errors": [] if ok else [{"message": "bad YAML"}],
                                                       "warnings": []})
            if self.path == "/api/repos/create":
                d = json.loads(body)
                repo = f"{d.get('organization') or d.get('namespace') or 'user'}/{d['name']}" \
                    if "/" not in d["name"] else d["name"]
                state.repos.setdefault(repo, {})
                return self._send(200, {"url": f"{base}/{repo}", "name": repo, "id": repo})
            m = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit|paths-info)/([^/?]+)", self.path)
            if not m or m.group(1) not in state.repos:
                return self._send(404, {"error": "Repository not found"})
            repo, what = m.group(1), m.group(2)
            if what == "preupload":
                files = json.loads(body).get("files") or []
                return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
            if what == "paths-info":
                return self._send(200, [])
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item.get("key") == "file":
                    v = item["value"]
                    state.repos[repo][v["path"]] = base64.b64decode(v["content"])
            oid = hashlib.sha1(body).hexdigest()
            return self._send(200, {"commitUrl": f"{base}/{repo}/commit/{oid}", "commitOid": oid,
                                    "pullRequestUrl": None})

    return Handler


@contextlib.contextmanager
def hub_standin() -> Iterator[tuple[str, HubState]]:
    """``(endpoint, state)`` of a stand-in Hub on a free loopback port, for the ``with`` block."""
    state = HubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
