"""Synthetic captioned scenes: the offline stand-in for COCO.

Each scene holds one to three coloured shapes on a varied background. Objects
are laid out along one axis and named in reading order (top to bottom, or left
to right), so every caption follows from the pixels alone:

    "a large red circle above a small blue square"
    "a small green star to the left of a large yellow triangle to the left of ..."

A model that ignores the image can only guess colours, shapes, sizes, count and
axis, so it scores far below one that looks (see tests/data/test_synthetic_scenes.py).
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 30),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "purple": (135, 45, 175),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
RELATIONS = {"vertical": "above", "horizontal": "to the left of"}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    x: float  # centre, pixels
    y: float
    radius: float

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    axis: str
    background: tuple[int, int, int]
    texture_seed: int

    def caption(self) -> str:
        relation = f" {RELATIONS[self.axis]} "
        return relation.join(obj.phrase() for obj in self.objects)


def _radius(size: str, canvas: int, rng: random.Random) -> float:
    if size == "small":
        return canvas * rng.uniform(0.07, 0.085)
    return canvas * rng.uniform(0.13, 0.15)


def sample_scene(rng: random.Random, canvas: int = 128) -> Scene:
    """Draw a random scene description (no pixels yet)."""
    count = rng.choices((1, 2, 3), weights=(0.2, 0.45, 0.35))[0]
    axis = rng.choice(("vertical", "horizontal"))
    kinds = [
        (rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SIZES)) for _ in range(count)
    ]
    radii = [_radius(size, canvas, rng) for _, _, size in kinds]
    # Slots along the axis keep objects apart and keep the reading order unambiguous;
    # jitter across the axis stays small enough that the relation is never diagonal.
    slot = canvas / count
    objects = []
    for index, ((shape, colour, size), radius) in enumerate(zip(kinds, radii, strict=True)):
        along_low = slot * index + radius + 2
        along_high = slot * (index + 1) - radius - 2
        along = rng.uniform(along_low, max(along_low, along_high))
        cross_span = canvas * (0.18 if count > 1 else 0.3)
        across = canvas / 2 + rng.uniform(-cross_span, cross_span)
        across = min(max(across, radius + 2), canvas - radius - 2)
        x, y = (along, across) if axis == "horizontal" else (across, along)
        objects.append(SceneObject(shape, colour, size, x, y, radius))
    # Muted backgrounds stay distinguishable from the saturated object colours.
    base = rng.randint(70, 200)
    background = tuple(min(255, max(0, base + rng.randint(-25, 25))) for _ in range(3))
    return Scene(tuple(objects), axis, background, rng.randrange(2**31))


def _star_points(x: float, y: float, radius: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        r = radius if i % 2 == 0 else radius * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((x + r * math.cos(angle), y + r * math.sin(angle)))
    return points


def render_scene(scene: Scene, canvas: int = 128) -> Image.Image:
    """Paint a scene: textured background, then each object with a little colour jitter."""
    rng = random.Random(scene.texture_seed)
    image = Image.new("RGB", (canvas, canvas), scene.background)
    draw = ImageDraw.Draw(image)
    # Background texture: a few faint blobs and stripes so no two backgrounds match.
    for _ in range(rng.randint(0, 6)):
        shade = tuple(min(255, max(0, c + rng.randint(-30, 30))) for c in scene.background)
        x0, y0 = rng.uniform(0, canvas), rng.uniform(0, canvas)
        extent = rng.uniform(10, canvas / 2)
        draw.ellipse((x0 - extent, y0 - extent, x0 + extent, y0 + extent), fill=shade)
    for obj in scene.objects:
        colour = tuple(min(255, max(0, c + rng.randint(-18, 18))) for c in COLOURS[obj.colour])
        x, y, r = obj.x, obj.y, obj.radius
        if obj.shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        elif obj.shape == "square":
            side = r * 0.9
            draw.rectangle((x - side, y - side, x + side, y + side), fill=colour)
        elif obj.shape == "triangle":
            draw.polygon([(x, y - r), (x - r, y + r * 0.8), (x + r, y + r * 0.8)], fill=colour)
        else:
            draw.polygon(_star_points(x, y, r * 1.1), fill=colour)
    return image


def generate_scenes(out_dir: str | Path, count: int, seed: int, canvas: int = 128) -> Path:
    """Write ``count`` scenes to ``out_dir/images/*.png`` and ``out_dir/captions.csv``.

    Deterministic for a given seed; returns the captions file path.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    captions_path = out / "captions.csv"
    with captions_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for index in range(count):
            scene = sample_scene(rng, canvas)
            name = f"scene_{seed}_{index:06d}.png"
            render_scene(scene, canvas).save(images / name, optimize=False)
            writer.writerow([name, scene.caption()])
    return captions_path
