"""Flask adapter (run by gunicorn): gunicorn -w 2 flask_app:app [--preload]."""

from flask import Flask, abort, jsonify, request

from bench_services import BAD, ROUTES

app = Flask(__name__)


@app.route("/<path:path>", methods=["GET", "POST"])
def dispatch(path):
    handler = ROUTES.get((request.method, "/" + path))
    if handler is None:
        abort(404)
    try:
        return jsonify(handler(request.args, request.get_data()))
    except BAD as e:
        return str(e), 400
