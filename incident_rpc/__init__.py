"""incident_rpc: an incident tracker with a POST-only command API and live events."""

from typing import Any

from flask import Flask, Request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix


class NoCookieSessions(SecureCookieSessionInterface):
    """Tokens travel with every command; nothing uses Flask's cookie session. Without
    this, each request would still build a signing serializer to look for one."""

    def open_session(self, app: Flask, request: Request) -> None:
        return None  # Flask then gives the request a NullSession, which refuses writes


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment (`Config`), with `overrides` on top."""
    from incident_rpc import (
        actions,  # noqa: F401  (importing it registers every action)
        cli,
        startup,
    )
    from incident_rpc.config import INSTANCE, Config, resolve_secret_key, with_psycopg2
    from incident_rpc.dispatch.registry import ACTIONS
    from incident_rpc.events import fanout, websocket
    from incident_rpc.extensions import db, migrate, sock
    from incident_rpc.http import (
        alertmanager,
        health,
        legacy,
        metrics,
        pagerduty,
        request_body,
        responses,
        rpc,
    )
    from incident_rpc.runtime import admission, database
    from incident_rpc.telemetry import hooks, logs

    app = Flask(__name__, instance_path=str(INSTANCE))
    app.session_interface = NoCookieSessions()
    app.config.from_object(Config)
    app.config.update(overrides or {})
    startup.check(app.config)  # gunicorn's master has checked already; the CLI has not
    # Before anything reads app.logger: Flask adds a handler of its own to a logger
    # that has none, and each record would then be written twice.
    logs.configure(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"], app.config["ACCESS_LOG"])
    resolve_secret_key(app.config)
    uri = with_psycopg2(app.config["SQLALCHEMY_DATABASE_URI"])
    app.config["SQLALCHEMY_DATABASE_URI"] = uri
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", database.engine_options(app.config))
    if app.config["PROXY_FIX_X_FOR"]:  # the client's address, for login throttling
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"])

    db.init_app(app)
    migrate.init_app(app, db, directory=database.MIGRATIONS)
    sock.init_app(app)
    hooks.init_app(app, ACTIONS)  # first: every request has its id before anything logs
    request_body.init_app(app)  # a body on its way takes no admission slot
    admission.init_app(app)
    app.register_error_handler(Exception, responses.outside_a_command)
    app.register_blueprint(legacy.bp)
    app.register_blueprint(rpc.bp)
    app.register_blueprint(alertmanager.bp)
    app.register_blueprint(pagerduty.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(websocket.bp)
    fanout.init_app(app)
    cli.init_app(app)
    with app.app_context():
        startup.prepare_database(app)
    return app
