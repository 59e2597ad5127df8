import pytest
from django.core.cache import cache

from embrec.encoders import reset_encoders
from embrec.popularity import forget_popularity
from embrec.storage import forget_indexes


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Indexes are dropped with the test database between tests that flush it."""
    forget_indexes()
    forget_popularity()
    # Throttle counters live in the cache: each test starts with none.
    cache.clear()
    yield
    forget_indexes()
    forget_popularity()


@pytest.fixture
def hashing_encoder():
    from embrec.encoders import get_encoder

    reset_encoders()
    return get_encoder("hashing")
