"""Serves what the two buildpacks of .buildpacks (node, then python) made."""
import http.server
import os
import sys


class Assets(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open("/app/assets.txt", "rb").read() + f"argv {sys.argv[1:]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "5000"))), Assets).serve_forever()
