"""MovieLens-100k, read from the ``recbole==1.2.1`` wheel fetched at run time.

GroupLens' terms forbid redistributing the data set, so it is never stored in this repository:
:func:`fetch_wheel` downloads the wheel from the package index into a cache folder (git-ignored)
and :func:`load_ml100k` reads ``recbole/dataset_example/ml-100k/`` straight from the zip.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

RECBOLE = "recbole==1.2.1"
PREFIX = "recbole/dataset_example/ml-100k/ml-100k"


class MovieLensUnavailable(RuntimeError):
    """The wheel could not be downloaded or does not contain the data set."""


@dataclass
class MovieLens:
    """The parsed data set."""

    movies: list[dict] = field(default_factory=list)  # movielens_id, title, year, genres
    users: list[dict] = field(default_factory=list)  # user_id, age, gender, occupation
    ratings: list[tuple[int, int, float, int]] = field(default_factory=list)  # user, item, r, ts


def default_cache_dir() -> Path:
    return Path(__file__).resolve().parents[2] / ".embrec" / "cache"


def fetch_wheel(cache_dir: Path | None = None) -> Path:
    """Return the path of the recbole wheel, downloading it once into ``cache_dir``."""
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob("recbole-1.2.1-*.whl"))
    if found:
        return found[0]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            str(cache_dir),
            RECBOLE,
        ],
        capture_output=True,
        text=True,
    )
    found = sorted(cache_dir.glob("recbole-1.2.1-*.whl"))
    if result.returncode != 0 or not found:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise MovieLensUnavailable(
            f"Could not download {RECBOLE} (which carries MovieLens-100k) from the package index: "
            f"{reason[-1] if reason else 'pip failed'}. Check network access to the package index, "
            "or pass --source with a local copy of the wheel."
        )
    return found[0]


def decode(data: bytes) -> str:
    """The files in the recbole wheel are UTF-8 (``Mis\\xc3\\xa9rables`` is "Misérables").

    GroupLens' original ``u.item`` is latin-1, so bytes that are not valid UTF-8 are read as
    latin-1 rather than rejected.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _rows(archive: zipfile.ZipFile, suffix: str) -> list[list[str]]:
    name = f"{PREFIX}.{suffix}"
    try:
        text = decode(archive.read(name))
    except KeyError:
        raise MovieLensUnavailable(f"{archive.filename} does not contain {name}.") from None
    lines = text.splitlines()
    return [line.split("\t") for line in lines[1:] if line.strip()]


def load_ml100k(source: str | Path | None = None, cache_dir: Path | None = None) -> MovieLens:
    """Parse MovieLens-100k from ``source`` (a wheel or zip; default: the fetched recbole wheel)."""
    path = Path(source) if source else fetch_wheel(cache_dir)
    if not path.exists():
        raise MovieLensUnavailable(f"{path} does not exist.")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise MovieLensUnavailable(f"{path} is not a wheel or zip file.") from None
    with archive:
        data = MovieLens()
        for row in _rows(archive, "item"):
            item_id, title, year, genres = (row + ["", "", ""])[:4]
            data.movies.append(
                {
                    "movielens_id": int(item_id),
                    "title": title.strip(),
                    "year": int(year) if year.strip().isdigit() else None,
                    "genres": genres.strip(),
                }
            )
        for row in _rows(archive, "user"):
            data.users.append(
                {
                    "user_id": int(row[0]),
                    "age": int(row[1]) if row[1].isdigit() else None,
                    "gender": row[2],
                    "occupation": row[3],
                }
            )
        for row in _rows(archive, "inter"):
            data.ratings.append((int(row[0]), int(row[1]), float(row[2]), int(float(row[3]))))
    return data
