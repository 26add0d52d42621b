"""WSGI entry point for gunicorn and `flask run`."""
from gateway import create_app

app = create_app()
