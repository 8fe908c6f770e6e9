"""A loopback HTTP server for download tests: serves files from memory, with scripted faults.

    server.add("/a.txt", data)                 # serve bytes
    server.fail("/a.txt", "500", "drop")       # the next two requests fail, then it serves again
    server.requests                            # every path requested, in order

Faults: "500" (server error), "404", "drop" (full Content-Length, half the body, connection
closed), "truncate" (no Content-Length, half the body: only a size pin notices), "corrupt" (same
length, different bytes), "stall" (full Content-Length, half the body, then nothing until the
server stops: a download to kill midway). Binds 127.0.0.1 on a free port; stops when the test ends, or by itself
after `lifetime_s`.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    def __init__(self, lifetime_s: float = 600.0):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.requests: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._stopped = threading.Event()
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url + path

    def fail(self, path: str, *faults: str) -> None:
        self.faults[path].extend(faults)

    def start(self) -> LoopbackServer:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                server.requests.append(path)
                fault = server.faults[path].pop(0) if server.faults[path] else None
                data = server.files.get(path)
                if data is None or fault == "404":
                    return self.send_error(404, "Not Found")
                if fault == "500":
                    return self.send_error(500, "Internal Server Error")
                self.send_response(200)
                if fault == "truncate":
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault in ("drop", "stall"):
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    if fault == "stall":
                        server._stopped.wait()
                    self.connection.close()
                    return
                if fault == "corrupt":
                    data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
                self.wfile.write(data)

        return Handler
