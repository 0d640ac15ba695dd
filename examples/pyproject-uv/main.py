"""A uv project that is not a package (no [build-system]): uv sync installs
its locked dependencies only."""
import http.server
import os

import itsdangerous


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"Hello from uv; itsdangerous {itsdangerous.__version__ if hasattr(itsdangerous, '__version__') else 'present'}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "5000"))), Hello).serve_forever()
