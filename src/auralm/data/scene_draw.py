"""Drawing a scene record: the shapes' geometry, :func:`render_scene` (Pillow: how ``auralm synth scenes`` draws
its images) and :func:`render_scene_alt` ("another program": numpy rasterisation, CSS colours, black outlines).

A record's ``objects`` (shape, colour's ``rgb``, ``position`` x/y and ``radius`` as fractions of the side,
``rotation``) and ``style`` (background, supersampling, outline, blur, noise) say everything drawn; the same record
gives the same pixels. Planning scenes, their words and files live in :mod:`auralm.data.scenes`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from auralm.core.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "star", "diamond")

# what render_scene_alt draws with (CSS named colours)
ALT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "purple": (128, 0, 128), "orange": (255, 165, 0), "pink": (255, 105, 180), "brown": (165, 42, 42),
    "black": (0, 0, 0),
}  # fmt: skip


# -- geometry ---------------------------------------------------------------------------------------


def shape_outline(obj: dict[str, Any], rotation: bool = True) -> tuple[str, Any]:
    """``("circle", (x, y, r))`` or ``("polygon", [(x, y), ...])`` in normalised image coordinates (y down)."""
    x, y, r = obj["position"]["x"], obj["position"]["y"], obj["radius"]
    shape = obj["shape"]
    if shape == "circle":
        return "circle", (x, y, r)
    if shape == "square":
        a = 0.82 * r  # half side; rotated by up to 15 degrees the square stays within radius r
        local = [(-a, -a), (a, -a), (a, a), (-a, a)]
    elif shape == "triangle":  # equilateral, pointing up, circumradius r
        local = [(r * math.cos(math.radians(t)), r * math.sin(math.radians(t))) for t in (-90, 30, 150)]
    elif shape == "star":  # five points, inner radius 0.45 r
        local = [((r if i % 2 == 0 else 0.45 * r) * math.cos(math.radians(-90 + 36 * i)),
                  (r if i % 2 == 0 else 0.45 * r) * math.sin(math.radians(-90 + 36 * i))) for i in range(10)]  # fmt: skip
    elif shape == "diamond":
        local = [(0.0, -r), (0.68 * r, 0.0), (0.0, r), (-0.68 * r, 0.0)]
    else:
        raise ConfigError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    theta = math.radians(obj.get("rotation", 0.0) if rotation else 0.0)
    c, s = math.cos(theta), math.sin(theta)
    return "polygon", [(x + px * c - py * s, y + px * s + py * c) for px, py in local]


def object_bbox(obj: dict[str, Any], image_size: int) -> list[int]:
    """Pixel box ``[x0, y0, x1, y1]`` (x1, y1 exclusive) around the drawn shape at ``image_size``."""
    kind, geo = shape_outline(obj)
    if kind == "circle":
        x, y, r = geo
        xs, ys = (x - r, x + r), (y - r, y + r)
    else:
        xs, ys = [p[0] for p in geo], [p[1] for p in geo]
    s = image_size
    return [max(0, math.floor(min(xs) * s)), max(0, math.floor(min(ys) * s)),
            min(s, math.ceil(max(xs) * s)), min(s, math.ceil(max(ys) * s))]  # fmt: skip


# distance from the centre to the nearest edge, as a fraction of the radius (see shape_outline)
INRADIUS = {"circle": 1.0, "square": 0.82, "triangle": 0.5, "diamond": 0.56, "star": 0.36}


def _inset(obj: dict[str, Any], kind: str, geo: Any, width: float) -> tuple[str, Any]:
    """The same shape shrunk about its centre so that its edges move inwards by ``width`` (normalised)."""
    x, y, r = obj["position"]["x"], obj["position"]["y"], obj["radius"]
    if kind == "circle":
        return kind, (x, y, max(r - width, 0.0))
    inradius = INRADIUS[obj["shape"]] * r
    factor = max(inradius - width, 0.0) / inradius
    return kind, [(x + (px - x) * factor, y + (py - y) * factor) for px, py in geo]


# -- drawing --------------------------------------------------------------------------------------


def render_scene(scene: dict[str, Any], image_size: int | None = None):
    """Draw a scene record (``objects`` + ``style``) with Pillow; returns an RGB ``PIL.Image``.

    This is how ``auralm synth scenes`` drew ``scene["image"]``: the same record gives the same pixels.
    """
    from PIL import Image, ImageDraw, ImageFilter

    size = int(image_size or scene["image_size"])
    style = scene["style"]
    k = int(style["supersample"])
    big = size * k
    image = Image.new("RGB", (big, big), tuple(style["background"]))
    draw = ImageDraw.Draw(image)

    def fill(kind: str, geo: Any, colour: tuple[int, int, int]) -> None:
        if kind == "circle":
            x, y, r = geo
            draw.ellipse([(x - r) * big, (y - r) * big, (x + r) * big, (y + r) * big], fill=colour)
        else:
            draw.polygon([(px * big, py * big) for px, py in geo], fill=colour)

    for obj in scene["objects"]:
        colour = tuple(obj["rgb"])
        kind, geo = shape_outline(obj)
        # an outline covers at most a fifth of the way to the centre, so the fill colour dominates
        width = min(float(style["outline"]), 0.2 * INRADIUS[obj["shape"]] * obj["radius"])
        if width > 0 and style["outline_tone"] != "none" and width * size >= 0.5:
            edge = (30, 30, 30) if style["outline_tone"] == "black" else tuple(int(0.6 * v) for v in colour)
            fill(kind, geo, edge)
            kind, geo = _inset(obj, kind, geo, width)
        fill(kind, geo, colour)
    if k > 1:
        image = image.resize((size, size), resample=int(style["resample"]))
    if style["blur"] > 0:
        image = image.filter(ImageFilter.GaussianBlur(float(style["blur"])))
    if style["noise"] > 0:
        rng = np.random.default_rng(int(style["noise_seed"]))
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, float(style["noise"]), (size, size, 3))
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image


def render_scene_alt(scene: dict[str, Any], image_size: int | None = None, *,
                     background: tuple[int, int, int] = (255, 255, 255), outline: float = 0.012):  # fmt: skip
    """Draw the same objects as "another program" would: numpy rasterisation, CSS colours
    (:data:`ALT_COLOURS`), black outlines of ``outline`` x the side, no anti-aliasing, no rotation,
    a white background, and other proportions (a taller triangle, a bigger square). For tests of
    whether a model generalises beyond :func:`render_scene`'s drawings."""
    from PIL import Image

    size = int(image_size or scene["image_size"])
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = background
    for obj in scene["objects"]:
        x, y, r = obj["position"]["x"], obj["position"]["y"], obj["radius"]
        if obj["shape"] == "triangle":  # isosceles, apex up
            kind, geo = "polygon", [(x, y - r), (x + 0.8 * r, y + 0.55 * r), (x - 0.8 * r, y + 0.55 * r)]
        elif obj["shape"] == "square":
            a = 0.75 * r
            kind, geo = "polygon", [(x - a, y - a), (x + a, y - a), (x + a, y + a), (x - a, y + a)]
        else:
            kind, geo = shape_outline(obj, rotation=False)
        depth = r - np.hypot(xx - x, yy - y) if kind == "circle" else _polygon_depth(xx, yy, geo)
        pixels[depth >= 0] = ALT_COLOURS[obj["colour"]]
        pixels[(depth >= 0) & (depth < max(outline, 1.0 / size))] = (0, 0, 0)
    return Image.fromarray(pixels, "RGB")


def _polygon_depth(xx: np.ndarray, yy: np.ndarray, poly: list[tuple[float, float]]) -> np.ndarray:
    """Signed distance to a simple polygon's boundary: positive inside (even-odd rule), negative outside."""
    inside = np.zeros(xx.shape, dtype=bool)
    dist = np.full(xx.shape, np.inf)
    for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1]):
        crosses = (y0 > yy) != (y1 > yy)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < at)
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)))
    return np.where(inside, dist, -dist)
