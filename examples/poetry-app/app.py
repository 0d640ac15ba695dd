"""A web app whose one dependency comes from poetry.lock; its dev group is not installed."""
import importlib.util
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

import six


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        dev = "installed" if importlib.util.find_spec("idna") else "not installed"
        body = f"Hello from Poetry: six {six.__version__}; dev group {dev}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("", int(os.environ.get("PORT", "5000"))), Hello).serve_forever()
