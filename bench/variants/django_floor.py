"""chatsite's settings, with two bare views in front of its URLs: the least a reply's two
requests can cost in Django under chatsite's own middleware.

``bench/request_cost.py --django-floor`` times them beside chatsite's requests, in the same
server. A reply is two requests, a POST and its event stream; each passes the same sixteen
middlewares (session, user, CSRF, language, security headers, ...) before any of chatsite's own
work. The bare POST checks the user and answers 204; the bare stream checks the user and sends
one event. What a reply costs beyond the two is chatsite's work: the checks, the inserts, the
generation, the final write. Nothing here is imported by chatsite itself.
"""

from __future__ import annotations

from chatsite.settings import *  # noqa: F403

ROOT_URLCONF = "bench.variants.django_floor_urls"
