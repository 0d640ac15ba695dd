"""Notes in PostgreSQL through DATABASE_URL (the postgres add-on sets it, with
sslmode=require): GET /add?text=... stores one, GET / counts them and says
whether the connection is encrypted."""
import os
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import psycopg


def connect():
    return psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5)


with connect() as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, text text NOT NULL)")


class Notes(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        with connect() as conn:
            if url.path == "/add":
                text = urllib.parse.parse_qs(url.query).get("text", ["?"])[0]
                conn.execute("INSERT INTO notes (text) VALUES (%s)", (text,))
                body = f"added {text}\n"
            else:
                count = conn.execute("SELECT count(*) FROM notes").fetchone()[0]
                ssl = conn.execute(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                ).fetchone()[0]
                body = f"notes: {count}; ssl: {ssl}\n"
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


HTTPServer(("", int(os.environ.get("PORT", "5000"))), Notes).serve_forever()
