"""Encoders for tests: the hashing encoder with knobs to make it slow, fragile or observable."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embrec.encoders.base import EncoderIdentity
from embrec.encoders.hashing import HashingEncoder


class InstrumentedHashingEncoder(HashingEncoder):
    """``HashingEncoder`` (same identity and vectors) plus test options:

    * ``record_dir`` — append every encoded text to ``<record_dir>/<pid>.log``, one per line;
    * ``sleep`` — seconds to sleep in every ``encode`` call, before encoding;
    * ``sleep_on`` — only sleep when a text contains this word;
    * ``sleep_mark`` — a file created just before each sleep (tests wait for it);
    * ``poison`` — raise ``ValueError`` for any batch containing a text with this word;
    * ``nan_on`` — return NaN values for texts containing this word.
    """

    option_names = HashingEncoder.option_names | {
        "record_dir",
        "sleep",
        "sleep_on",
        "sleep_mark",
        "poison",
        "nan_on",
    }

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        poison = self.options.get("poison")
        if poison and any(poison in text for text in texts):
            raise ValueError(f"cannot encode a text containing {poison!r}")
        sleep_on = self.options.get("sleep_on")
        if self.options.get("sleep") and (not sleep_on or any(sleep_on in t for t in texts)):
            if self.options.get("sleep_mark"):
                Path(self.options["sleep_mark"]).touch()
            time.sleep(float(self.options["sleep"]))
        vectors = super().encode_texts(texts)
        nan_on = self.options.get("nan_on")
        if nan_on:
            for row, text in enumerate(texts):
                if nan_on in text:
                    vectors[row] = np.nan
        record_dir = self.options.get("record_dir")
        if record_dir:
            with open(Path(record_dir) / f"{os.getpid()}.log", "a", encoding="utf-8") as log:
                log.writelines(f"{text}\n" for text in texts)
        return vectors


def recorded_texts(record_dir: Path) -> dict[str, list[str]]:
    """Texts encoded per process log file."""
    return {
        file.stem: file.read_text(encoding="utf-8").splitlines()
        for file in sorted(Path(record_dir).glob("*.log"))
    }


class SaltedHashingEncoder(InstrumentedHashingEncoder):
    """Another "model" with the hashing encoder's dimensions: tokens are hashed with ``salt``.

    Its identity (``salted-hashing@<salt>+…``) and vectors differ from ``HashingEncoder``'s, so
    a switch between them changes every answer while the index dimensions stay the same.
    """

    option_names = InstrumentedHashingEncoder.option_names | {"salt"}

    def get_identity(self) -> EncoderIdentity:
        base = super().get_identity()
        salt = str(self.options.get("salt", ""))
        # The revision still ends with "bigrams" (HashingEncoder.encode_texts reads it).
        return EncoderIdentity("salted-hashing", f"{salt}+{base.revision}", base.dimensions, True)

    def _bucket(self, token: str, dims: int) -> tuple[int, float]:
        return HashingEncoder._bucket(f"{self.options.get('salt', '')}|{token}", dims)
