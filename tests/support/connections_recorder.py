"""A stand-in for the API Gateway Management API (`@connections`) that records what was posted.

`POST /@connections/{id}` stores the body for a known connection (200) and answers 410 GoneException,
as API Gateway does, for a connection marked gone. `GET` and `DELETE` behave the same way.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/@connections/"


class ConnectionsRecorder:
    def __init__(self, port: int = 0):
        self.posts: dict[str, list[dict]] = {}
        self.gone: set[str] = set()
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _connection_id(self) -> str | None:
                return self.path[len(PREFIX):] if self.path.startswith(PREFIX) else None

            def _reply(self, status: int, body: dict | None = None, error_type: str | None = None):
                payload = json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if error_type:
                    self.send_header("x-amzn-ErrorType", error_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                connection_id = self._connection_id()
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if connection_id is None:
                    return self._reply(404, {"message": "not found"})
                if connection_id in recorder.gone:
                    return self._reply(410, {"message": "gone"}, "GoneException")
                with recorder._lock:
                    recorder.posts.setdefault(connection_id, []).append(json.loads(data))
                return self._reply(200)

            def do_GET(self):
                connection_id = self._connection_id()
                if connection_id is None or connection_id in recorder.gone:
                    return self._reply(410, {"message": "gone"}, "GoneException")
                return self._reply(200, {"connectedAt": "2026-01-01T00:00:00Z"})

            def do_DELETE(self):
                return self._reply(204)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="connections-recorder", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ConnectionsRecorder":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def events(self, connection_id: str) -> list[dict]:
        with self._lock:
            return list(self.posts.get(connection_id, []))


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.support.connections_recorder --port P`: serve in a process of its own (so a
    benchmark does not count its CPU as the worker's) until SIGTERM, then print how many frames came."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    recorder = ConnectionsRecorder(args.port)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    recorder.start()
    stopped.wait()
    recorder.stop()
    print(sum(len(frames) for frames in recorder.posts.values()), flush=True)


if __name__ == "__main__":
    main()
