"""The WSGI entry point: `gunicorn wsgi:app` (settings in gunicorn.conf.py)."""

from incident_rpc import create_app

app = create_app()
