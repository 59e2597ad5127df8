"""Settings of the recorded evaluation (docs/EVALUATION.md): the demo's, plus every encoder
embrec offers, so that one ``embrec_evaluate`` run compares them side by side on the demo's
database::

    DJANGO_SETTINGS_MODULE=project.evaluation_settings python manage.py embrec_evaluate ...

The serving configuration (the ``hybrid`` encoder, profile and blend settings) is the demo's,
unchanged: ``hybrid (deployed)`` in the report is what the demo serves.
"""

from project.settings import *  # noqa: F403
from project.settings import EMBREC

EMBREC = {
    **EMBREC,
    "ENCODERS": {
        **EMBREC["ENCODERS"],
        # Implicit ALS item factors; users folded in from their items (the read path's way).
        # Not called "als": that name is the ALS baseline of embrec_evaluate.
        "als-vectors": {
            "CLASS": "embrec.encoders.als.ALSEncoder",
            "OPTIONS": {"factors": 64, "regularization": 0.5, "similarity": "cosine"},
        },
        # Robust item2vec: behaviour shrunk towards mapped content by support (n / (n + 20)),
        # content alone under 5 users; cold items live in the behavioural space.
        "adaptive": {
            "CLASS": "embrec.encoders.adaptive.AdaptiveHybridEncoder",
            "OPTIONS": {"behaviour": "item2vec", "content": "default"},
        },
        # The same over ALS factors.
        "adaptive-als": {
            "CLASS": "embrec.encoders.adaptive.AdaptiveHybridEncoder",
            "OPTIONS": {"behaviour": "als-vectors", "content": "default"},
        },
        # MiniLM fine-tuned on co-consumed movies (retrained on each split's training part in
        # the evaluation; 150 steps keep a CPU run to about a minute per split).
        "finetuned": {
            "CLASS": "embrec.encoders.finetune.FinetunedEncoder",
            "OPTIONS": {"max_steps": 150},
        },
    },
}
