"""Demo only: browse the catalog as one of the MovieLens users, without signing in.

The chosen user's pk is kept in the session. Only the accounts the demo loader creates for
MovieLens users (``ml1`` … ``ml943``) can be chosen, and never one with staff or superuser status.
Nothing here signs anybody in: ``request.user`` is untouched, so the admin and the API see the
visitor as before. A real site identifies its users with ``django.contrib.auth`` instead.

It shows any MovieLens user's history (in the explanations) to any visitor, which is fine for
public demo data only: the setting ``DEMO_USER_SWITCHER = False`` turns it off (the switcher is
hidden, its URL answers 404 and only signed-in users get personal pages).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest

SESSION_KEY = "catalog_browsing_user"

#: Usernames the demo loader gives MovieLens users.
USERNAME = re.compile(r"^ml([1-9][0-9]{0,6})$")


class UnknownUser(ValueError):
    """The requested MovieLens user does not exist or may not be browsed as."""


def enabled() -> bool:
    """Whether the switcher is on (``DEMO_USER_SWITCHER``, default ``True``)."""
    return bool(getattr(settings, "DEMO_USER_SWITCHER", True))


def eligible_users():
    """The accounts a visitor may browse as: active MovieLens users without any admin rights."""
    return get_user_model().objects.filter(
        username__regex=USERNAME.pattern, is_active=True, is_staff=False, is_superuser=False
    )


def parse_username(value: str) -> str:
    """``"42"`` or ``"ml42"`` → ``"ml42"``; :class:`UnknownUser` for anything else."""
    value = (value or "").strip().lower()
    if value.isdigit():
        value = f"ml{int(value)}" if len(value) <= 7 else value
    if not USERNAME.fullmatch(value):
        raise UnknownUser("Enter a MovieLens user number, e.g. 42 or ml42.")
    return value


def choose(request: HttpRequest, value: str) -> AbstractBaseUser:
    """Browse as the MovieLens user named by ``value`` (``"random"`` picks one)."""
    users = eligible_users()
    if (value or "").strip().lower() == "random":
        user = users.order_by("?").first()
        if user is None:
            raise UnknownUser("There are no MovieLens users yet: run `manage.py demo` first.")
    else:
        username = parse_username(value)
        user = users.filter(username=username).first()
        if user is None:
            raise UnknownUser(f"There is no MovieLens user {username}.")
    request.session[SESSION_KEY] = user.pk
    return user


def stop(request: HttpRequest) -> None:
    """Stop browsing as a MovieLens user."""
    request.session.pop(SESSION_KEY, None)


def browsing_user(request: HttpRequest) -> AbstractBaseUser | None:
    """The MovieLens user chosen in this session, else the signed-in user, else ``None``.

    The session's choice is checked again on every request, so an account that was since given
    admin rights (or removed) is dropped rather than used.
    """
    cached = getattr(request, "_catalog_browsing_user", False)
    if cached is not False:
        return cached
    user = None
    pk = request.session.get(SESSION_KEY) if hasattr(request, "session") and enabled() else None
    if pk is not None:
        user = eligible_users().filter(pk=pk).first()
        if user is None:
            stop(request)
    if user is None:
        signed_in = getattr(request, "user", None)
        if signed_in is not None and signed_in.is_authenticated:
            user = signed_in
    request._catalog_browsing_user = user
    return user


def is_demo_user(request: HttpRequest) -> bool:
    """Whether the browsing user comes from the demo's user switcher."""
    return bool(getattr(request, "session", None) and request.session.get(SESSION_KEY))
