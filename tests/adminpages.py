"""Helpers of the admin page tests."""

from django.contrib.auth.models import Permission, User


def login(client, *codenames: str, superuser: bool = False):
    """``client`` logged in as a superuser, or as staff with exactly the permissions named."""
    if superuser:
        user = User.objects.create_superuser("admin", "a@example.com", "pw")
    else:
        user = User.objects.create_user("staff", "s@example.com", "pw", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client
