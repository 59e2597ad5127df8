"""The EfficientNet-Lite0 image encoder and the text + image hybrid, on images drawn by the test
(shapes and patterns in several colours), through the write path on real PostgreSQL."""

import io
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.test import override_settings
from PIL import Image, ImageDraw

import embrec
from embrec import indexing
from embrec.conf import validate
from embrec.encoders import get_encoder
from embrec.encoders.image import FEATURES, ImageEncoder, image_key, projection_matrix
from embrec.models import Embedding, OutboxEntry
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Photo

SHAPES = ["circle", "square", "triangle", "stripes", "checker"]
COLOURS = [(220, 30, 30), (30, 160, 30), (30, 60, 220), (230, 200, 20)]
PLACEMENTS = [(160, (0, 0)), (110, (20, -15))]


def draw(shape: str, colour, size: int = 160, offset=(0, 0)) -> Image.Image:
    """A 224 × 224 image of one shape (or pattern) on white."""
    image = Image.new("RGB", (224, 224), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    cx, cy, r = 112 + offset[0], 112 + offset[1], size // 2
    if shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "stripes":
        for x in range(0, 224, 16):
            pen.rectangle((x, 0, x + 7, 223), fill=colour)
    elif shape == "checker":
        for x in range(0, 224, 28):
            for y in range(0, 224, 28):
                if (x // 28 + y // 28) % 2 == 0:
                    pen.rectangle((x, y, x + 27, y + 27), fill=colour)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def encoder():
    return ImageEncoder("image", device="cpu", batch_size=16)


def test_same_shape_images_are_nearer_than_different_ones(encoder):
    images, labels = [], []
    for shape in SHAPES:
        for colour in COLOURS:
            for size, offset in PLACEMENTS:
                images.append(draw(shape, colour, size, offset))
                labels.append(shape)
    vectors = encoder.encode_images(images)
    assert vectors.shape == (len(images), FEATURES) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    labels = np.array(labels)
    sims = vectors @ vectors.T
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    others = ~same
    np.fill_diagonal(others, False)
    for row in range(len(images)):
        # Every image is nearer, on average, to the other images of its shape (in other colours,
        # sizes and places) than to images of other shapes, and its nearest neighbour is one.
        assert sims[row][same[row]].mean() > sims[row][others[row]].mean() + 0.1, labels[row]
        nearest = np.argmax(np.where(np.eye(len(images), dtype=bool)[row], -np.inf, sims[row]))
        assert labels[nearest] == labels[row]
    # Batching does not change vectors.
    one_by_one = np.stack([encoder.encode_images([image])[0] for image in images[:3]])
    assert np.allclose(one_by_one, vectors[:3], atol=1e-4)


def test_imagenet_weights_and_preprocessing_recognise_a_photograph():
    """The packaged weights and the Pillow/numpy preprocessing classify a real photograph (the
    portrait matplotlib ships) as ImageNet's "military uniform" (class 652)."""
    import torch

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    encoder = ImageEncoder("photo", device="cpu", fit="pad")
    model = encoder.load_model()
    from embrec.encoders.image import open_image, prepare_image

    batch = torch.from_numpy(prepare_image(open_image(photo), "pad")[None])
    with torch.inference_mode():
        logits = model(batch)
    assert int(logits.argmax()) == 652
    # The encoder's vector is the pooled input of that classifier.
    features = encoder.features([open_image(photo)])
    with torch.inference_mode():
        again = model._fc(torch.from_numpy(features))
    assert torch.allclose(again, logits, atol=1e-3)


def test_reduced_dimensions_keep_similarities(encoder):
    images = [draw(shape, COLOURS[0]) for shape in SHAPES] + [draw("circle", COLOURS[2], 120)]
    full = encoder.encode_images(images)
    small = ImageEncoder("small", device="cpu", dimensions=256)
    reduced = small.encode_images(images)
    assert reduced.shape == (len(images), 256)
    assert small.identity.dimensions == 256 and small.identity != encoder.identity
    error = np.abs((reduced @ reduced.T) - (full @ full.T)).max()
    assert error < 0.12, error
    projection = projection_matrix(FEATURES, 256)
    assert np.allclose(projection.T @ projection, np.eye(256), atol=1e-5)
    assert np.array_equal(projection, projection_matrix(FEATURES, 256))


def test_options_are_checked():
    cls = "embrec.encoders.image.ImageEncoder"
    problems = validate(
        {
            "ENCODERS": {
                "a": {"CLASS": cls, "OPTIONS": {"fit": "zoom"}},
                "b": {"CLASS": cls, "OPTIONS": {"dimensions": 4096}},
                "c": {"CLASS": cls, "OPTIONS": {"batch_size": 0}},
                "d": {"CLASS": cls, "OPTIONS": {"dimension": 64}},
            },
            "DEFAULT_ENCODERS": ["a"],
        }
    )
    assert len(problems) == 4
    with pytest.raises(ImproperlyConfigured, match="cannot embed text"):
        ImageEncoder("x").encode(["a text"])


# ----------------------------------------------------------------------------- write path


def image_settings():
    return {
        "ENCODERS": {
            **TEST_EMBREC["ENCODERS"],
            "image": {"CLASS": "embrec.encoders.image.ImageEncoder", "OPTIONS": {"device": "cpu"}},
            "photo": {
                "CLASS": "embrec.encoders.hybrid.HybridEncoder",
                "OPTIONS": {
                    "parts": [
                        {"encoder": "hashing", "weight": 1.0},
                        {"encoder": "image", "weight": 1.0},
                    ]
                },
            },
        }
    }


@pytest.fixture
def photos(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")

    @embrec.register(Photo)
    class PhotoRecommendable(embrec.Recommendable):
        fields = ["title"]
        image_field = "image"
        encoders = ["image", "photo"]
        search_encoder = "photo"

    try:
        with override_settings(EMBREC=image_settings()):
            yield
    finally:
        embrec.unregister(Photo)


def make_photo(title: str, image: Image.Image | bytes | None) -> Photo:
    photo = Photo(title=title)
    if image is not None:
        data = image if isinstance(image, bytes) else png(image)
        photo.image.save(f"{title.replace(' ', '-')}.png", ContentFile(data), save=False)
    photo.save()
    return photo


def stored(photo: Photo, encoder: str) -> Embedding | None:
    ct = ContentType.objects.get_for_model(Photo)
    return Embedding.objects.filter(
        content_type=ct, object_pk=str(photo.pk), encoder=encoder
    ).first()


@pytest.mark.django_db
def test_write_path_embeds_images_and_similar_finds_the_same_shape(photos):
    catalog = {}
    for shape in ["circle", "square", "stripes"]:
        for n, colour in enumerate(COLOURS[:3]):
            catalog[(shape, n)] = make_photo(f"{shape} {n}", draw(shape, colour, 150 - 20 * n))
    no_image = make_photo("no picture at all", None)
    broken = make_photo("broken file", b"this is not an image")

    result = indexing.drain()
    # 9 images under both encoders, plus the text-only photo under the hybrid.
    assert result.encoded == 9 + 10
    assert result.failed == 1  # the unreadable file fails its own object only
    failure = OutboxEntry.objects.get()
    assert failure.object_pk == str(broken.pk) and failure.state == OutboxEntry.FAILED
    assert "image" in failure.last_error and "UnidentifiedImageError" in failure.last_error
    assert stored(no_image, "image") is None  # no image: no vector, and not a failure
    assert stored(no_image, "photo") is not None  # the hybrid's text part still has one
    vector = stored(catalog[("circle", 0)], "image")
    assert vector.dimensions == FEATURES
    assert vector.identity == get_encoder("image").identity.as_string()
    assert stored(catalog[("circle", 0)], "photo").dimensions == 64 + FEATURES

    for shape in ["circle", "square", "stripes"]:
        results = embrec.similar(catalog[(shape, 0)], encoder="image", limit=2)
        assert {r.object.title.split()[0] for r in results} == {shape}

    # The hybrid ranks by title words and by the picture; text search uses its text part.
    found = embrec.search("stripes", model=Photo, limit=3)
    assert {r.object.title.split()[0] for r in found} == {"stripes"}

    # Saving without a change re-encodes nothing; a new upload re-encodes that photo.
    circle = catalog[("circle", 0)]
    circle.save()
    assert indexing.drain().unchanged == 2
    before = np.asarray(stored(circle, "image").vector, dtype=np.float32)
    circle.image.save("replaced.png", ContentFile(png(draw("triangle", COLOURS[0]))))
    result = indexing.drain()
    assert result.encoded == 2
    after = np.asarray(stored(circle, "image").vector, dtype=np.float32)
    assert float(before @ after) < 0.95
    # The hybrid of a photo whose title changed but image did not is re-encoded too.
    square = catalog[("square", 1)]
    square.title = "square renamed"
    square.save()
    result = indexing.drain()
    assert (result.encoded, result.unchanged) == (1, 1)

    # Once the broken file is replaced, the object is embedded and its failure cleared.
    broken.image.save("fixed.png", ContentFile(png(draw("square", COLOURS[1]))))
    indexing.drain()
    assert stored(broken, "image") is not None
    assert OutboxEntry.objects.count() == 0


def test_image_keys_change_with_the_image(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png(draw("circle", COLOURS[0])))
    first = image_key(path)
    path.write_bytes(png(draw("square", COLOURS[1], 100)))
    assert image_key(path) != first
    assert image_key(b"abc") != image_key(b"abd")
    red, blue = draw("circle", COLOURS[0]), draw("circle", COLOURS[2])
    assert image_key(red) != image_key(blue) and image_key(red) == image_key(red.copy())
    assert image_key(None) == "-"
