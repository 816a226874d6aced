"""WSGI entry point, kept for tools that expect one.

Do not serve chatsite with it: under WSGI Django reads the reply stream to its end before
sending it, so replies would arrive all at once. Serve ``chatsite.asgi:application``.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

application = get_wsgi_application()
