"""Intrinsic comparison of text encoders on the standard word- and document-level test sets.

Decontextualised (single words, no sentence around them):

* **word similarity** — Spearman's ρ between cosine similarities and human scores on WordSim353
  and SimLex-999 (pairs with a word the encoder does not know are skipped and counted);
* **analogies** — Google's questions-words (``a : b :: c : ?``), 3CosAdd: the answer is the word
  nearest to ``b − a + c`` (unit vectors), excluding ``a``, ``b`` and ``c``. Candidates are the
  words of the test set itself (≈900), the same set for every encoder, so a subword model and a
  400k-word vocabulary are compared on equal terms (this is easier than searching a whole
  vocabulary; figures are not comparable with full-vocabulary accuracies).

Contextualised (whole documents):

* **document similarity** — the Lee corpus (50 news articles) and its averaged human similarity
  judgements: Pearson's r and Spearman's ρ between cosine similarities of document vectors and the
  human scores over the 1,225 document pairs. Documents are encoded as the encoders embed item
  texts (GloVe: :class:`~embrec.encoders.static.StaticWordEncoder`, the mean of its word vectors).

Any configured text encoder can be compared with the two references
(:func:`configured_encoder`; ``embrec_evaluate --intrinsic --encoders ALIAS``), e.g. a larger
model served by a remote embedding service.

All data sets ship with ``gensim`` (``gensim/test/test_data``); nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embrec.encoders.loading import get_encoder
from embrec.encoders.sentence_transformer import SentenceTransformerEncoder
from embrec.encoders.static import StaticWordEncoder

#: An encoder for intrinsic tests: texts → (n, d) vectors, with ``None`` rows for unknown words.
TextVectors = Callable[[Sequence[str]], list]


def test_data_dir() -> Path:
    """gensim's bundled test data folder."""
    try:
        import gensim
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Intrinsic evaluation needs gensim's test data: pip install 'embrec[evaluate]'."
        ) from exc
    return Path(gensim.__file__).parent / "test" / "test_data"


@dataclass
class IntrinsicResult:
    """Scores of one encoder on every intrinsic task."""

    encoder: str
    scores: dict[str, float] = field(default_factory=dict)
    coverage: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"encoder": self.encoder, "scores": self.scores, "coverage": self.coverage}


# --------------------------------------------------------------------------- loaders


def read_word_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """``word1 <tab> word2 <tab> score`` lines; ``#`` lines are comments."""
    pairs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b, score = line.split("\t")[:3]
        pairs.append((a.lower(), b.lower(), float(score)))
    return pairs


def read_analogies(path: str | Path) -> list[tuple[str, str, str, str, str]]:
    """``(section, a, b, c, d)`` from questions-words.txt (lower-cased)."""
    out = []
    section = ""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        words = line.lower().split()
        if len(words) == 4:
            a, b, c, d = words
            out.append((section, a, b, c, d))
    return out


def read_lee(folder: str | Path) -> tuple[list[str], np.ndarray]:
    """The 50 Lee documents and the symmetric 50 × 50 matrix of human similarity scores."""
    folder = Path(folder)
    docs = [
        line.strip()
        for line in (folder / "lee.cor").read_text(encoding="latin-1").splitlines()
        if line.strip()
    ]
    rows = [
        [float(x) for x in line.split()]
        for line in (folder / "similarities0-1.txt").read_text().splitlines()
        if line.strip()
    ]
    sims = np.array(rows)
    upper = np.triu(sims, 1)
    return docs, upper + upper.T + np.eye(len(sims))


# --------------------------------------------------------------------------- encoders


class GloVeVectors:
    """GloVe 6B 50d through embrec's :class:`~embrec.encoders.static.StaticWordEncoder`.

    Words are looked up in its vocabulary (``None`` when unknown); documents are encoded exactly
    as the encoder embeds item texts (mean of the word vectors, L2-normalised).
    """

    def __init__(self, encoder=None):
        if encoder is None:
            encoder = StaticWordEncoder("intrinsic-glove")
        self.encoder = encoder

    def words(self, words: Sequence[str]) -> list[np.ndarray | None]:
        """Vectors of single words; ``None`` when not in the vocabulary."""
        vectors, vocab = self.encoder.load()
        out = []
        for word in words:
            row = vocab.get(word.lower())
            out.append(None if row is None else np.asarray(vectors[row], dtype=np.float32))
        return out

    def documents(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Document vectors as the encoder computes them for item texts."""
        return list(self.encoder.encode(list(texts)))


class SentenceEncoderVectors:
    """Any embrec text encoder (MiniLM by default): words and documents are both encoded as text."""

    def __init__(self, encoder=None):
        if encoder is None:
            encoder = SentenceTransformerEncoder("intrinsic-minilm")
        self.encoder = encoder

    def words(self, words: Sequence[str]) -> list[np.ndarray | None]:
        return list(self.encoder.encode(list(words)))

    documents = words


def configured_encoder(alias: str) -> tuple[TextVectors, TextVectors]:
    """(word function, document function) of the encoder configured under ``alias`` in
    ``EMBREC["ENCODERS"]``: a static word-vector encoder looks single words up in its vocabulary
    (unknown words are skipped, as for GloVe); any other text encoder — MiniLM, a fine-tuned or
    larger model, a remote embedding service — embeds words and documents as text.

    Raises ``ImproperlyConfigured`` for an unknown alias and ``ValueError`` for an encoder that
    does not embed text (behavioural or image encoders).
    """
    encoder = get_encoder(alias)
    if not encoder.uses_text:
        raise ValueError(
            f"Encoder {alias!r} does not embed text (it learns from interactions or embeds "
            "images), so it has no intrinsic text scores."
        )
    if isinstance(encoder, StaticWordEncoder):
        vectors = GloVeVectors(encoder)
        return vectors.words, vectors.documents
    text = SentenceEncoderVectors(encoder)
    return text.words, text.documents


# --------------------------------------------------------------------------- tasks


def _cache(fn: TextVectors, texts: Sequence[str]) -> dict[str, np.ndarray | None]:
    unique = list(dict.fromkeys(texts))
    return dict(zip(unique, fn(unique), strict=True))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na and nb else 0.0


def word_similarity(fn: TextVectors, pairs: Sequence[tuple[str, str, float]]) -> tuple[float, int]:
    """Spearman's ρ of cosine vs human scores, and the number of pairs scored."""
    from scipy.stats import spearmanr

    vectors = _cache(fn, [w for a, b, _ in pairs for w in (a, b)])
    model, human = [], []
    for a, b, score in pairs:
        va, vb = vectors[a], vectors[b]
        if va is None or vb is None:
            continue
        model.append(_cos(va, vb))
        human.append(score)
    if len(model) < 3:
        return float("nan"), len(model)
    return float(spearmanr(model, human).statistic), len(model)


def analogies(
    fn: TextVectors, questions: Sequence[tuple[str, str, str, str, str]]
) -> tuple[float, int, dict[str, float]]:
    """3CosAdd accuracy over the questions' own words; also per semantic/syntactic group."""
    words = list(dict.fromkeys(w for q in questions for w in q[1:]))
    vectors = _cache(fn, words)
    known = [w for w in words if vectors[w] is not None]
    pos = {w: i for i, w in enumerate(known)}
    if not known:
        return float("nan"), 0, {}
    m = np.stack([v for w in known if (v := vectors[w]) is not None]).astype(np.float32)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
    usable = [q for q in questions if all(w in pos for w in q[1:])]
    if not usable:
        return float("nan"), 0, {}
    a = np.array([pos[q[1]] for q in usable])
    b = np.array([pos[q[2]] for q in usable])
    c = np.array([pos[q[3]] for q in usable])
    d = np.array([pos[q[4]] for q in usable])
    correct = np.zeros(len(usable), dtype=bool)
    for lo in range(0, len(usable), 2048):
        sl = slice(lo, lo + 2048)
        target = m[b[sl]] - m[a[sl]] + m[c[sl]]
        scores = target @ m.T
        rows = np.arange(scores.shape[0])
        for col in (a[sl], b[sl], c[sl]):
            scores[rows, col] = -np.inf
        correct[sl] = scores.argmax(axis=1) == d[sl]
    groups: dict[str, list[bool]] = {"semantic": [], "syntactic": []}
    for q, ok in zip(usable, correct, strict=True):
        groups["syntactic" if q[0].startswith("gram") else "semantic"].append(bool(ok))
    by_group = {g: float(np.mean(v)) for g, v in groups.items() if v}
    return float(correct.mean()), len(usable), by_group


def document_similarity(
    fn: TextVectors, docs: Sequence[str], human: np.ndarray
) -> tuple[float, float]:
    """Pearson's r and Spearman's ρ between document cosines and human scores (pairs i < j)."""
    from scipy.stats import pearsonr, spearmanr

    vectors = fn(list(docs))
    dims = next(len(v) for v in vectors if v is not None)
    m = np.stack([v if v is not None else np.zeros(dims) for v in vectors]).astype(np.float64)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
    sims = m @ m.T
    iu = np.triu_indices(len(docs), 1)
    return float(pearsonr(sims[iu], human[iu]).statistic), float(
        spearmanr(sims[iu], human[iu]).statistic
    )


def evaluate_encoder(
    name: str,
    words: TextVectors,
    documents: TextVectors,
    *,
    data_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> IntrinsicResult:
    """Run every intrinsic task for one encoder."""
    folder = Path(data_dir) if data_dir else test_data_dir()
    result = IntrinsicResult(name)
    for task, filename in (("wordsim353", "wordsim353.tsv"), ("simlex999", "simlex999.txt")):
        pairs = read_word_pairs(folder / filename)
        rho, used = word_similarity(words, pairs)
        result.scores[f"{task}_spearman"] = rho
        result.coverage[task] = f"{used}/{len(pairs)}"
        if progress:
            progress(f"{name}: {task}")
    questions = read_analogies(folder / "questions-words.txt")
    acc, used, groups = analogies(words, questions)
    result.scores["analogy_accuracy"] = acc
    for group, value in groups.items():
        result.scores[f"analogy_{group}"] = value
    result.coverage["analogies"] = f"{used}/{len(questions)}"
    if progress:
        progress(f"{name}: analogies")
    docs, human = read_lee(folder)
    r, rho = document_similarity(documents, docs, human)
    result.scores["lee_pearson"] = r
    result.scores["lee_spearman"] = rho
    result.coverage["lee"] = f"{len(docs) * (len(docs) - 1) // 2} pairs"
    if progress:
        progress(f"{name}: lee")
    return result


def default_encoders() -> dict[str, tuple[TextVectors, TextVectors]]:
    """``{"glove-6b-50d": …, "all-MiniLM-L6-v2": …}``: (word function, document function)."""
    glove = GloVeVectors()
    minilm = SentenceEncoderVectors()
    return {
        "glove-6b-50d": (glove.words, glove.documents),
        "all-MiniLM-L6-v2": (minilm.words, minilm.documents),
    }
