"""Load encoders when a process starts, so that its first query does not pay for the load.

Loading a sentence-transformers model (importing torch, reading the weights) takes seconds to
tens of seconds; by default it happens on the first search in each web process. Call
:func:`preload_encoders` where the process starts serving, e.g. at the end of ``wsgi.py``::

    application = get_wsgi_application()
    embrec.preload_encoders()      # EMBREC["PRELOAD_ENCODERS"], e.g. ["default"]

Nothing is loaded at import or in ``AppConfig.ready()``: management commands (``migrate``,
``embrec_status``) and Celery's beat never pay for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from embrec.conf import embrec_settings
from embrec.encoders import get_encoder

logger = logging.getLogger("embrec")

#: The text encoded once per text encoder, so the first real query also skips lazy set-up
#: (tokenizer, kernels).
WARMUP_TEXT = "embrec warm-up"


def preload_encoders(aliases: Sequence[str] | None = None) -> dict[str, float]:
    """Load the encoders ``aliases`` (default ``EMBREC["PRELOAD_ENCODERS"]``) in this process.

    Text encoders load their model and encode one short text; others load what their identity
    needs. Returns ``{alias: seconds}``. An unknown alias raises ``ImproperlyConfigured``;
    errors while loading propagate, so a broken model fails the process start, not a request.
    """
    if aliases is None:
        aliases = list(embrec_settings.PRELOAD_ENCODERS)
    timings: dict[str, float] = {}
    for alias in aliases:
        started = time.monotonic()
        encoder = get_encoder(alias)
        if encoder.uses_text:
            encoder.encode([WARMUP_TEXT])
        else:
            encoder.identity  # noqa: B018 (loads the trained model's metadata)
        timings[alias] = time.monotonic() - started
        logger.info("embrec: encoder %r preloaded in %.1fs.", alias, timings[alias])
    return timings
