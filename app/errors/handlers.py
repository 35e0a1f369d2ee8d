"""HTML error pages for browsers, JSON errors for AJAX and API clients."""

from flask import jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from app.errors import bp
from app.extensions import db


def wants_json_response() -> bool:
    if request.is_json or request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and (
        request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


def error_response(status: int, message: str):
    if wants_json_response():
        return jsonify({"status": "error", "error": message, "code": status}), status
    return render_template("errors/error.html", code=status, message=message), status


@bp.app_errorhandler(CSRFError)
def csrf_error(error: CSRFError):
    return error_response(400, f"The form or request was rejected: {error.description}")


@bp.app_errorhandler(HTTPException)
def http_error(error: HTTPException):
    return error_response(error.code or 500, error.description or error.name)


@bp.app_errorhandler(InternalServerError)
def internal_error(error: InternalServerError):
    db.session.rollback()
    return error_response(500, "Something went wrong on our side. It has been logged.")
