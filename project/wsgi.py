"""WSGI entry point of the demo project."""

import os

from django.core.wsgi import get_wsgi_application

import embrec

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
application = get_wsgi_application()
# Load the search model (EMBREC["PRELOAD_ENCODERS"]) now, not on the first search.
embrec.preload_encoders()
