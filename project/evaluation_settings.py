"""Settings of the recorded evaluation (docs/EVALUATION.md): the demo's, plus the other encoders
embrec offers, so that one ``embrec_evaluate`` run compares them side by side on the demo's
database::

    DJANGO_SETTINGS_MODULE=project.evaluation_settings python manage.py embrec_evaluate ...

The serving configuration (the ``adaptive`` encoder over ``mf``, profile and blend settings) is
the demo's, unchanged: ``adaptive (deployed)`` in the report is what the demo serves.
"""

from project.settings import *  # noqa: F403
from project.settings import EMBREC

EMBREC = {
    **EMBREC,
    "ENCODERS": {
        **EMBREC["ENCODERS"],
        # item2vec with its default options (retrained on each split's training part).
        "item2vec": {"CLASS": "embrec.encoders.item2vec.Item2VecEncoder", "OPTIONS": {}},
        # The former demo deployment: item2vec concatenated with MiniLM at half weight.
        "hybrid": {
            "CLASS": "embrec.encoders.hybrid.HybridEncoder",
            "OPTIONS": {
                "parts": [
                    {"encoder": "item2vec", "weight": 1.0},
                    {"encoder": "default", "weight": 0.5},
                ]
            },
        },
        # Robust item2vec: behaviour shrunk towards mapped content by support, content alone for
        # items under min_support users (the adaptive hybrid over item2vec).
        "adaptive-i2v": {
            "CLASS": "embrec.encoders.adaptive.AdaptiveHybridEncoder",
            "OPTIONS": {"behaviour": "item2vec", "content": "default"},
        },
        # MiniLM fine-tuned on co-consumed movies (fine-tuned again on each split's training
        # part; 150 steps keep a CPU run to a few minutes per split).
        "finetuned": {
            "CLASS": "embrec.encoders.finetune.FinetunedEncoder",
            "OPTIONS": {"max_steps": 150},
        },
    },
}
