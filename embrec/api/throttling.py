"""Throttles of the embrec API, with rates from ``EMBREC["THROTTLE_RATES"]``.

On by default (``EMBREC["API_THROTTLE_CLASSES"]``): :class:`AnonRateThrottle` per client IP and
:class:`UserRateThrottle` per user on every endpoint, and :class:`SearchRateThrottle` on search
only, which runs the text encoder on every request. Rates use DRF's syntax (``"30/min"``,
``"1000/hour"``); ``None`` turns a throttle off. The counters live in Django's default cache:
use a shared cache (Redis, Memcached) when several processes serve the API.
"""

from __future__ import annotations

from rest_framework import throttling

from embrec.conf import embrec_settings


class EmbrecRateMixin:
    """Read the rate of ``embrec_<name>`` from ``EMBREC["THROTTLE_RATES"][name]`` per request."""

    #: Key of ``EMBREC["THROTTLE_RATES"]``.
    rate_name: str = ""

    def get_rate(self) -> str | None:
        return embrec_settings.THROTTLE_RATES.get(self.rate_name)


class AnonRateThrottle(EmbrecRateMixin, throttling.AnonRateThrottle):
    """Anonymous requests, per client IP (default ``"100/min"``)."""

    scope = "embrec_anon"
    rate_name = "anon"


class UserRateThrottle(EmbrecRateMixin, throttling.UserRateThrottle):
    """Authenticated requests, per user (anonymous ones per IP; default ``"1000/min"``)."""

    scope = "embrec_user"
    rate_name = "user"


class SearchRateThrottle(EmbrecRateMixin, throttling.SimpleRateThrottle):
    """Semantic searches, per user or client IP (default ``"30/min"``): each one encodes text."""

    scope = "embrec_search"
    rate_name = "search"

    def get_cache_key(self, request, view) -> str:
        if request.user and request.user.is_authenticated:
            ident = request.user.pk
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
