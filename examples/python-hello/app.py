"""A Python web app with no dependencies and no Procfile: the python
buildpack finds app.py and runs `python3 app.py` as its web process."""
import http.server
import json
import os
import platform


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/env":
            body = json.dumps({"GREETING": os.environ.get("GREETING", "")}).encode()
            kind = "application/json"
        else:
            greeting = os.environ.get("GREETING", "Hello")
            body = f"{greeting} from Python {platform.python_version()}\n".encode()
            kind = "text/plain; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    print(f"listening on port {port}", flush=True)
    http.server.ThreadingHTTPServer(("", port), Hello).serve_forever()
