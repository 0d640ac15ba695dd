"""A Flask app behind gunicorn, which binds to $PORT and reads WEB_CONCURRENCY
and FORWARDED_ALLOW_IPS from the environment by itself."""
import os

from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def index():
    return (
        f"Hello from Flask; scheme={request.scheme}; "
        f"workers={os.environ.get('WEB_CONCURRENCY')}; dyno={os.environ.get('DYNO')}\n",
        200,
        {"content-type": "text/plain"},
    )
