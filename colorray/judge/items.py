"""Study items built from output folders or a manifest, and the order each rater sees them in.

A folder source holds one subfolder per system (its name is the system name)
plus ``truth`` (or ``ground_truth``) with the original color photos. The same
relative file name, suffix aside, in two folders is the same photo, so
``modelA/birds/jay.png`` and ``truth/birds/jay.jpg`` are both photo
``birds/jay``. A manifest (``.json``: a list of ``{"photo", "system", "path"}``
objects; ``.csv``: columns ``photo,system,path``) names the same triples
directly, with paths relative to the manifest.

Items get ids derived from task, photo and systems, so votes keep pointing at
the same item across restarts; images get ids from photo, system and the file's
size and time. The browser never sees a file path.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from colorray.data.images import (
    IMAGE_SUFFIXES,
    ImageError,
    find_images,
    read_image_file,
)
from colorray.judge.tasks import PAIRWISE, REAL_OR_FAKE, TRUTH

TRUTH_FOLDERS = ("truth", "ground_truth")
ID_PATTERN = re.compile(r"[0-9a-f]{16}")
MANIFEST_FIELDS = ("photo", "system", "path")

Photos = dict[str, dict[str, Path]]  # photo -> system -> image file


class ItemsError(ValueError):
    """An items folder or manifest that cannot make a study; the message names the problem."""


@dataclass(frozen=True)
class StudyImage:
    id: str
    photo: str
    system: str
    path: Path


@dataclass(frozen=True)
class Item:
    """What one vote is about: one image (real_or_fake, grade) or two images of one photo (pairwise)."""

    id: str
    task: str
    photo: str
    systems: tuple[str, ...]  # sorted
    images: tuple[str, ...]  # image ids, in the order of ``systems``


@dataclass(frozen=True)
class Study:
    task: str
    items: dict[str, Item]
    images: dict[str, StudyImage]

    def queue(self, session: str) -> list[Item]:
        """The items of ``session`` in its own random order, the same on every call and restart.

        In real_or_fake a rater sees each photo once, in one randomly chosen
        version (a system's or the truth): having seen the real colors of a photo
        would give its fakes away.
        """
        rng = random.Random(f"{self.task}:{session}")
        items = list(self.items.values())
        if self.task == REAL_OR_FAKE:
            versions: dict[str, list[Item]] = defaultdict(list)
            for item in items:
                versions[item.photo].append(item)
            items = [rng.choice(choices) for choices in versions.values()]
        rng.shuffle(items)
        return items

    def shown_order(self, session: str, item: Item) -> tuple[int, ...]:
        """Positions of ``item.images`` on screen: pairwise left/right is a coin flip per rater and item."""
        if self.task == PAIRWISE and random.Random(f"{session}:{item.id}").random() < 0.5:
            return 1, 0
        return tuple(range(len(item.images)))


def content_id(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def image_id(photo: str, system: str, path: Path) -> str:
    """Changes when the file does (size, modification time), so browsers never show a cached old version."""
    stat = path.stat()
    return content_id(photo, system, str(stat.st_size), str(stat.st_mtime_ns))


def open_study(source: Path, task: str) -> Study:
    """Read, check (every image decodes) and turn into items of ``task``; ``ItemsError`` if unusable."""
    photos = read_manifest(source) if source.is_file() else read_folder(source)
    check_images(photos)
    return build_study(photos, task, str(source))


def read_folder(folder: Path) -> Photos:
    if not folder.is_dir():
        raise ItemsError(f"items folder not found: {folder}")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    truths = [p.name for p in subfolders if p.name in TRUTH_FOLDERS]
    if len(truths) > 1:
        raise ItemsError(f"{folder} has both {' and '.join(truths)}: keep one ground-truth folder")
    if not subfolders:
        raise ItemsError(f"no system folders in {folder}: expected one subfolder per system plus truth/")
    photos: Photos = defaultdict(dict)
    for subfolder in subfolders:
        system = TRUTH if subfolder.name in TRUTH_FOLDERS else subfolder.name
        for photo, path in _photos_in(subfolder).items():
            photos[photo][system] = path
    return dict(photos)


def _photos_in(folder: Path) -> dict[str, Path]:
    images = find_images(folder)
    if not images:
        raise ItemsError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    found: dict[str, Path] = {}
    for path in images:
        photo = path.relative_to(folder).with_suffix("").as_posix()
        if photo in found:
            raise ItemsError(f"two images of photo {photo} in {folder}: {found[photo].name} and {path.name}")
        found[photo] = path
    return found


def read_manifest(manifest: Path) -> Photos:
    if manifest.suffix.lower() not in (".json", ".csv"):
        raise ItemsError(f"manifest {manifest} must be .json or .csv (or give a folder)")
    try:
        text = manifest.read_text(encoding="utf-8")
        entries = json.loads(text) if manifest.suffix.lower() == ".json" else list(csv.DictReader(text.splitlines()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as error:
        raise ItemsError(f"cannot read manifest {manifest}: {error}") from None
    if not isinstance(entries, list) or not entries:
        raise ItemsError(f"manifest {manifest} lists no images: expected a list of {{photo, system, path}}")
    photos: Photos = defaultdict(dict)
    for number, entry in enumerate(entries, start=1):
        photo, system, path = _manifest_entry(entry, number, manifest)
        if system in photos[photo]:
            raise ItemsError(f"manifest {manifest} entry {number}: photo {photo} of system {system} listed twice")
        photos[photo][system] = path
    return dict(photos)


def _manifest_entry(entry: object, number: int, manifest: Path) -> tuple[str, str, Path]:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) and entry[key].strip()
                                              for key in MANIFEST_FIELDS):
        raise ItemsError(f"manifest {manifest} entry {number}: needs non-empty photo, system and path")
    system = entry["system"].strip()
    path = manifest.parent / entry["path"].strip()
    if not path.is_file():
        raise ItemsError(f"manifest {manifest} entry {number}: image not found: {path}")
    return entry["photo"].strip(), TRUTH if system in TRUTH_FOLDERS else system, path


def check_images(photos: Photos) -> None:
    for versions in photos.values():
        for path in versions.values():
            try:
                read_image_file(path)
            except (ImageError, OSError) as error:
                raise ItemsError(f"{path}: {error}") from None


def build_study(photos: Photos, task: str, source: str) -> Study:
    systems = sorted({system for versions in photos.values() for system in versions} - {TRUTH})
    if task == PAIRWISE and len(systems) < 2:
        raise ItemsError(f"pairwise needs at least two systems in {source}, found {systems or 'none'}")
    if task == REAL_OR_FAKE and not any(TRUTH in versions for versions in photos.values()):
        raise ItemsError(f"real_or_fake needs ground truth in {source}: a truth/ folder or system 'truth'")
    if not systems:
        raise ItemsError(f"no colorizing system in {source}: only ground truth")
    images = {(photo, system): StudyImage(image_id(photo, system, path), photo, system, path)
              for photo, versions in photos.items() for system, path in versions.items()}
    items = [_item(task, photo, shown, images) for photo, versions in sorted(photos.items())
             for shown in _shown_systems(task, versions)]
    if not items:
        raise ItemsError(f"no {task} items in {source}: no photo is shared by two systems")
    return Study(task, {item.id: item for item in items}, {image.id: image for image in images.values()})


def _shown_systems(task: str, versions: dict[str, Path]) -> list[tuple[str, ...]]:
    """Pairwise: every pair of systems (truth left out); otherwise each system and the truth alone."""
    if task == PAIRWISE:
        return list(combinations(sorted(set(versions) - {TRUTH}), 2))
    return [(system,) for system in sorted(versions)]


def _item(task: str, photo: str, systems: tuple[str, ...], images: dict) -> Item:
    return Item(content_id(task, photo, *systems), task, photo, systems,
                tuple(images[photo, system].id for system in systems))
