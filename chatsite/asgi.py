"""ASGI entry point: the one way chatsite is served (uvicorn), in development and production."""

import gc
import os

import django
from django.urls import get_resolver

from chatsite.handler import SyncChainASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application does

application = SyncChainASGIHandler()

# What is loaded now (Django, the apps, the URLconf and the views it imports) lives as long as
# the process. Frozen, it is left out of the garbage collector's full passes, each of which would
# otherwise walk all of it while every open stream of this process waits. (Importing this module
# freezes: so does the test suite's server, which imports it to serve the real application.)
get_resolver().url_patterns  # noqa: B018 (imports the views, as the first request would)
gc.collect()
gc.freeze()
