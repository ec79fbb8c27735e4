"""``auralm synth scenes``: drawn scenes of coloured shapes with captions, questions and conversations.

Each scene holds 1 to 3 shapes (circle, square, triangle; star and diamond on request) in named colours
(red, green, blue, yellow, purple, orange; pink, brown, black on request), each small or large, each in
its own cell of a 3 x 3 grid (with jitter inside the cell), on a plain light background. Because no
shape leaves its cell, objects never overlap, and "left", "right", "top" and "bottom" are never in
doubt. Drawing varies per scene: colour shade (several reference shades per name plus jitter), size
jitter, rotation, outline width and tone, background tint, anti-aliasing (supersampling 1-4x and the
downscaling filter), blur and pixel noise; so a model trained on the scenes can meet drawings by other
programs. :func:`render_scene_alt` is such another program: the same scene drawn with numpy, CSS
colours, black outlines, no anti-aliasing and a white background.

Layout of ``--out DIR``::

    DIR/images/000000-1a2b3c4d.png   RGB, image_size x image_size
    DIR/scenes.jsonl                 one record per scene (schema in docs/data.md)
    DIR/config.yaml                  the resolved SceneConfig (held-out combinations included)

Scene ``i`` depends only on the seed and ``i`` (not on ``--n``); the same seed gives byte-identical
files. Splits are per scene (a hash of the scene index); scenes in the train split never contain a
held-out colour-shape combination, and none of their captions, questions or answers names one. An
image's name holds a hash of everything that draws it: a rerun keeps valid images and removes stale
ones of this naming.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.config import Config, apply_overrides, comma_list, help_field, save_config
from auralm.core.errors import ConfigError, ManifestError
from auralm.core.io import atomic_path, atomic_write_text
from auralm.core.progress import progress
from auralm.data.manifest import split_for_source
from auralm.data.scene_draw import (  # noqa: F401  (re-exported: the scene API in one place)
    ALT_COLOURS,
    INRADIUS,
    SHAPES,
    object_bbox,
    render_scene,
    render_scene_alt,
    shape_outline,
)
from auralm.data.scene_words import (  # noqa: F401  (re-exported: the scene API in one place)
    DESCRIBE,
    NUMBER_WORDS,
    QUESTION_TYPES,
    answer,
    canonical_caption,
    make_captions,
    make_conversations,
    make_questions,
    matches,
    pick,
)

RENDER_VERSION = 2  # bump when the drawing of a recorded scene changes: image names change with it

# Reference shades per colour name (ours, CSS, matplotlib's tab10, a variant); a shade is picked per
# object and jittered, so the names cover what other programs call these colours.
COLOURS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((220, 30, 30), (255, 0, 0), (214, 39, 40), (190, 20, 45)),
    "green": ((40, 170, 60), (0, 128, 0), (44, 160, 44), (20, 200, 70)),
    "blue": ((30, 70, 220), (0, 0, 255), (31, 119, 180), (65, 105, 225)),
    "yellow": ((245, 215, 20), (255, 255, 0), (255, 221, 0), (250, 235, 50)),
    "purple": ((140, 50, 180), (128, 0, 128), (148, 103, 189), (160, 32, 240)),
    "orange": ((245, 130, 20), (255, 165, 0), (255, 127, 14), (255, 140, 0)),
    "pink": ((240, 120, 180), (255, 105, 180), (227, 119, 194), (255, 150, 200)),
    "brown": ((140, 80, 30), (165, 42, 42), (140, 86, 75), (120, 70, 20)),
    "black": ((25, 25, 25), (0, 0, 0), (50, 50, 50), (35, 30, 40)),
}
DEFAULT_COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
DEFAULT_SHAPES = ["circle", "square", "triangle"]
DEFAULT_HELDOUT = ["blue triangle", "yellow circle", "purple square"]
SIZES = ("small", "large")
COLUMNS = ("left", "centre", "right")
ROWS = ("top", "middle", "bottom")
IMAGE_NAME = re.compile(r"^\d{6,}-[0-9a-f]{8}\.png$")
_CELL = 1 / 3


@dataclasses.dataclass
class SceneConfig(Config):
    """Settings of ``auralm synth scenes``."""

    out: str = help_field("", "output folder (images/, scenes.jsonl, config.yaml)")
    n: int = help_field(200, "number of scenes")
    seed: int = help_field(0, "seed of every choice: objects, drawing style, wording")
    image_size: int = help_field(224, "side of the square images in pixels (64 for S4 imagine)")
    colours: list[str] = help_field(DEFAULT_COLOURS, f"colour names used, from {', '.join(COLOURS)}")
    shapes: list[str] = help_field(DEFAULT_SHAPES, f"shapes used, from {', '.join(SHAPES)}")
    min_objects: int = help_field(1, "fewest shapes in a scene")
    max_objects: int = help_field(3, "most shapes in a scene (at most 9: one per grid cell)")
    heldout: list[str] = help_field(DEFAULT_HELDOUT, "'colour shape' combinations kept out of the train "
                                                     "split entirely (they appear only in valid/test scenes)")
    valid_frac: float = help_field(0.1, "fraction of scenes in the valid split")
    test_frac: float = help_field(0.1, "fraction of scenes in the test split")
    small_radius: list[float] = help_field([0.07, 0.09], "radius range of small shapes, as a fraction of the side")
    large_radius: list[float] = help_field([0.13, 0.16], "radius range of large shapes (below 1/6: one cell)")
    rotation: float = help_field(12.0, "largest rotation of non-circles, degrees either way")
    colour_jitter: int = help_field(16, "largest change of each RGB channel from the reference shade")
    background: list[int] = help_field([226, 255], "range of the background's RGB channels (light)")
    outline: list[float] = help_field([0.0, 0.02], "outline width range, as a fraction of the side")
    supersample: list[int] = help_field([1, 2, 3, 4], "anti-aliasing choices: draw k times larger, then "
                                                      "downscale (1: aliased edges)")
    blur: float = help_field(0.6, "largest Gaussian blur radius in pixels (0: none)")
    noise: float = help_field(3.0, "largest standard deviation of pixel noise, in 0..255 units (0: none)")
    captions: int = help_field(4, "captions per scene (the first is the canonical full description)")
    qa_per_type: int = help_field(2, "questions of each type per scene (fewer when a scene allows fewer)")
    conversations: int = help_field(2, "multi-turn conversations per scene")
    turns: list[int] = help_field([2, 4], "question turns per conversation, [low, high]")
    jobs: int = help_field(2, "pictures drawn at once (threads: Pillow and numpy release the GIL; every scene draws "
                              "from its own seed, so the files are the same for any number)")  # fmt: skip

    def validate(self) -> None:
        if not isinstance(self.out, str) or not self.out.strip():
            raise ConfigError("SceneConfig.out: an output folder is required (--out DIR)")
        if self.n < 1:
            raise ConfigError(f"SceneConfig.n: the number of scenes must be at least 1, got {self.n}")
        if self.image_size < 32:
            raise ConfigError(f"SceneConfig.image_size: must be at least 32 pixels, got {self.image_size}")
        if self.jobs < 1:
            raise ConfigError(f"SceneConfig.jobs: must be at least 1, got {self.jobs}")
        for name, known in (("colours", COLOURS), ("shapes", SHAPES)):
            value = getattr(self, name)
            if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
                raise ConfigError(f"SceneConfig.{name}: expected a list of names, got {value!r}")
            unknown = [v for v in value if v not in known]
            if unknown:
                raise ConfigError(f"SceneConfig.{name}: unknown {', '.join(map(repr, unknown))}; "
                                  f"known: {', '.join(known)}")  # fmt: skip
            if len(set(value)) != len(value) or not value:
                raise ConfigError(f"SceneConfig.{name}: expected distinct names, at least one, got {value!r}")
        held = self.heldout_pairs()
        train = [c for c in self.combinations() if c not in held]
        for colour in self.colours:
            if not any(c == colour for c, _ in train):
                raise ConfigError(f"SceneConfig.heldout: every combination with {colour!r} is held out; "
                                  "each colour must stay in training with some shape")  # fmt: skip
        for shape in self.shapes:
            if not any(s == shape for _, s in train):
                raise ConfigError(f"SceneConfig.heldout: every combination with {shape!r} is held out; "
                                  "each shape must stay in training with some colour")  # fmt: skip
        if not 1 <= self.min_objects <= self.max_objects <= 9:
            raise ConfigError(f"SceneConfig: need 1 <= min_objects <= max_objects <= 9, "
                              f"got {self.min_objects} and {self.max_objects}")  # fmt: skip
        if self.max_objects > len(train):
            raise ConfigError(f"SceneConfig.max_objects: {self.max_objects} distinct shapes need as many "
                              f"colour-shape combinations in training, there are {len(train)}")  # fmt: skip
        if not (0 <= self.valid_frac < 1 and 0 <= self.test_frac < 1 and self.valid_frac + self.test_frac < 1):
            raise ConfigError(f"SceneConfig: valid_frac and test_frac must be in [0, 1) and sum below 1, "
                              f"got {self.valid_frac} and {self.test_frac}")  # fmt: skip
        small, large = _pair(self, "small_radius", float), _pair(self, "large_radius", float)
        if not 0.02 <= small[0] <= small[1] < large[0] <= large[1] <= 0.16:
            raise ConfigError(f"SceneConfig: need 0.02 <= small_radius <= large_radius <= 0.16 with the small range "
                              f"below the large one, got {small} and {large}")  # fmt: skip
        if not 0 <= self.rotation <= 15:
            raise ConfigError(f"SceneConfig.rotation: must be in [0, 15] degrees, got {self.rotation}")
        if not 0 <= self.colour_jitter <= 40:
            raise ConfigError(f"SceneConfig.colour_jitter: must be in [0, 40], got {self.colour_jitter}")
        bg = _pair(self, "background", int)
        if not 200 <= bg[0] <= bg[1] <= 255:
            raise ConfigError(f"SceneConfig.background: expected [low, high] within [200, 255], got {bg}")
        ol = _pair(self, "outline", float)
        if not 0 <= ol[0] <= ol[1] <= 0.03:
            raise ConfigError(f"SceneConfig.outline: expected [low, high] within [0, 0.03], got {ol}")
        ss = self.supersample
        if not isinstance(ss, list) or not ss or any(not isinstance(k, int) or not 1 <= k <= 8 for k in ss):
            raise ConfigError(f"SceneConfig.supersample: expected a list of whole numbers in 1..8, got {ss!r}")
        if not 0 <= self.blur <= 3 or not 0 <= self.noise <= 20:
            raise ConfigError(f"SceneConfig: blur must be in [0, 3] and noise in [0, 20], got {self.blur}, {self.noise}")
        for name in ("captions", "qa_per_type"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SceneConfig.{name}: must be at least 1, got {getattr(self, name)}")
        if self.conversations < 0:
            raise ConfigError(f"SceneConfig.conversations: must be >= 0, got {self.conversations}")
        t = _pair(self, "turns", int)
        if not 1 <= t[0] <= t[1]:
            raise ConfigError(f"SceneConfig.turns: expected [low, high] with 1 <= low <= high, got {t}")

    def combinations(self) -> list[tuple[str, str]]:
        """Every (colour, shape) pair of the vocabulary."""
        return [(c, s) for c in self.colours for s in self.shapes]

    def heldout_pairs(self) -> set[tuple[str, str]]:
        """``heldout`` parsed into (colour, shape) pairs; raises naming a bad entry."""
        if not isinstance(self.heldout, list) or any(not isinstance(h, str) for h in self.heldout):
            raise ConfigError(f"SceneConfig.heldout: expected a list of 'colour shape' strings, got {self.heldout!r}")
        pairs = set()
        for entry in self.heldout:
            words = entry.split()
            if len(words) != 2:
                raise ConfigError(f"SceneConfig.heldout: {entry!r} is not 'colour shape' (e.g. 'blue triangle')")
            colour, shape = words
            if colour not in self.colours:
                raise ConfigError(f"SceneConfig.heldout: {entry!r}: colour {colour!r} is not one of the colours "
                                  f"{self.colours}")  # fmt: skip
            if shape not in self.shapes:
                raise ConfigError(f"SceneConfig.heldout: {entry!r}: shape {shape!r} is not one of the shapes {self.shapes}")
            pairs.add((colour, shape))
        return pairs


def _pair(cfg: SceneConfig, name: str, kind: type) -> list:
    value = getattr(cfg, name)
    ok = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int)) for v in value
    )
    if not ok or value[0] > value[1]:
        raise ConfigError(f"SceneConfig.{name}: expected [low, high] ({kind.__name__}s), got {value!r}")
    return [kind(v) for v in value]


# -- planning a scene -------------------------------------------------------------------------------


def _rng(cfg: SceneConfig, index: int, stream: int) -> np.random.Generator:
    """Independent streams per scene: 0 objects, 1 drawing style, 2 wording."""
    return np.random.default_rng([cfg.seed, index, stream])


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * rng.random())


def plan_objects(cfg: SceneConfig, index: int, split: str) -> list[dict[str, Any]]:
    """The shapes of scene ``index``: distinct colour-shape pairs, one grid cell each, in reading order."""
    rng = _rng(cfg, index, 0)
    held = cfg.heldout_pairs()
    combos = [c for c in cfg.combinations() if split != "train" or c not in held]
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    chosen = [combos[int(i)] for i in rng.choice(len(combos), size=count, replace=False)]
    cells = sorted(int(c) for c in rng.choice(9, size=count, replace=False))
    objects = []
    for (colour, shape), cell in zip(chosen, cells):
        row, col = divmod(cell, 3)
        size = pick(rng, SIZES)
        radius = round(_uniform(rng, *(cfg.small_radius if size == "small" else cfg.large_radius)), 4)
        room = _CELL / 2 - radius - 0.005  # the centre may move this far and keep the shape in its cell
        x = round((col + 0.5) * _CELL + _uniform(rng, -room, room), 4)
        y = round((row + 0.5) * _CELL + _uniform(rng, -room, room), 4)
        rotation = 0.0 if shape == "circle" else round(_uniform(rng, -cfg.rotation, cfg.rotation), 2)
        shade = pick(rng, COLOURS[colour])
        rgb = [int(np.clip(v + rng.integers(-cfg.colour_jitter, cfg.colour_jitter + 1), 0, 255)) for v in shade]
        objects.append({
            "colour": colour, "shape": shape, "size": size,
            "position": {"column": COLUMNS[col], "row": ROWS[row], "x": x, "y": y},
            "radius": radius, "rotation": rotation, "rgb": rgb, "heldout": (colour, shape) in held,
        })  # fmt: skip
    return objects


def plan_style(cfg: SceneConfig, index: int) -> dict[str, Any]:
    """How scene ``index`` is drawn: background, outline, anti-aliasing, blur, noise."""
    rng = _rng(cfg, index, 1)
    base = _uniform(rng, *cfg.background)
    background = [int(np.clip(round(base + _uniform(rng, -8, 8)), cfg.background[0], 255)) for _ in range(3)]
    tone = pick(rng, ("none", "dark", "black"))
    width = 0.0 if tone == "none" else round(_uniform(rng, *cfg.outline), 4)
    return {
        "background": background,
        "outline": width,
        "outline_tone": tone if width > 0 else "none",
        "supersample": int(pick(rng, cfg.supersample)),
        "resample": int(pick(rng, (1, 2, 3, 4))),  # PIL LANCZOS, BILINEAR, BICUBIC, BOX
        "blur": round(_uniform(rng, 0, cfg.blur), 3) if rng.random() < 0.5 else 0.0,
        "noise": round(_uniform(rng, 0, cfg.noise), 3) if rng.random() < 0.5 else 0.0,
        "noise_seed": int(rng.integers(2**31)),
    }


# -- scenes -----------------------------------------------------------------------------------------


def scene_split(cfg: SceneConfig, index: int) -> str:
    """The split of scene ``index``, from a hash of the seed and the index alone."""
    return split_for_source(f"scene-{index}", cfg.valid_frac, cfg.test_frac, seed=cfg.seed)


def make_scene(cfg: SceneConfig, index: int) -> dict[str, Any]:
    """The full record of scene ``index`` (without drawing it)."""
    split = scene_split(cfg, index)
    objects = plan_objects(cfg, index, split)
    style = plan_style(cfg, index)
    for obj in objects:
        obj["bbox"] = object_bbox(obj, cfg.image_size)
    drawn = [{k: o[k] for k in ("shape", "position", "radius", "rotation", "rgb")} for o in objects]
    key = hashlib.sha256(json.dumps([RENDER_VERSION, cfg.image_size, drawn, style], sort_keys=True).encode())
    scene_id = f"{index:06d}-{key.hexdigest()[:8]}"
    rng = _rng(cfg, index, 2)
    captions = make_captions(objects, cfg.captions, rng)
    qa = make_questions(objects, cfg, split, rng)
    return {
        "id": scene_id, "index": index, "image": f"images/{scene_id}.png", "image_size": cfg.image_size,
        "split": split, "heldout": any(o["heldout"] for o in objects), "objects": objects, "style": style,
        "captions": captions, "qa": qa, "conversations": make_conversations(qa, captions, cfg, rng),
    }  # fmt: skip


def _image_ok(path: Path, size: int) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format != "PNG" or im.size != (size, size) or im.mode != "RGB":
                return False
            im.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


def synth_scenes(cfg: SceneConfig) -> Path:
    """Draw the scenes described by ``cfg``; return the path of ``scenes.jsonl``."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    started = time.perf_counter()
    scenes = [make_scene(cfg, i) for i in range(cfg.n)]
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)

    def draw(scene: dict[str, Any]) -> bool:
        path = out / scene["image"]
        if path.is_file() and _image_ok(path, cfg.image_size):
            return False
        image = render_scene(scene)
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG", compress_level=1)  # level 6 takes 5x longer on noisy images
        return True

    with ThreadPoolExecutor(cfg.jobs) as pool:
        drawn = sum(progress(pool.map(draw, scenes), desc="synth scenes", total=len(scenes)))
    path = out / "scenes.jsonl"
    atomic_write_text(path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in scenes))
    keep = {Path(s["image"]).name for s in scenes}
    stale = [p for p in images.iterdir() if (IMAGE_NAME.match(p.name) and p.name not in keep) or p.name.endswith(".tmp")]
    for p in stale:
        p.unlink()
    counts = {k: sum(s["split"] == k for s in scenes) for k in ("train", "valid", "test")}
    held = sum(s["heldout"] for s in scenes)
    elapsed = time.perf_counter() - started
    print(f"auralm synth scenes: {len(scenes)} scenes ({drawn} drawn, {len(scenes) - drawn} reused, {elapsed:.1f} s); "
          f"train/valid/test = {counts['train']}/{counts['valid']}/{counts['test']}; {held} scenes hold a held-out "
          f"combination ({', '.join(cfg.heldout) or 'none'}){f'; removed {len(stale)} stale files' if stale else ''}; "
          f"wrote {path}", file=sys.stderr)  # fmt: skip
    return path


def read_scenes(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``scenes.jsonl`` (or of the folder holding it); bad lines raise naming them."""
    path = Path(path)
    if path.is_dir():
        path = path / "scenes.jsonl"
    if not path.is_file():
        raise ManifestError(f"{path}: no such file (make one with `auralm synth scenes --out DIR`)")
    scenes, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            bad.append(f"line {number}: not JSON ({exc})")
            continue
        missing = [k for k in ("id", "image", "split", "objects", "captions", "qa") if k not in record]
        if missing:
            bad.append(f"line {number}: missing {', '.join(missing)}")
            continue
        scenes.append(record)
    if bad:
        raise ManifestError(f"{path}: " + "; ".join(bad))
    return scenes


# -- command ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="auralm synth scenes", description="Draw scenes of coloured shapes with "
                                "captions, questions and conversations (see docs/data.md).",
                                epilog="Trailing key=value pairs override any SceneConfig field, e.g. "
                                       "max_objects=2 \"heldout=[red circle]\" colours=[red,green,blue].")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, help="number of scenes (default 200)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--image-size", type=int, help="image side in pixels (default 224)")
    p.add_argument("--jobs", type=int, help="pictures drawn at once (default 2)")
    p.add_argument("--heldout", help="comma-separated 'colour shape' combinations kept out of training "
                                     f"(default: {', '.join(DEFAULT_HELDOUT)}; '' for none)")  # fmt: skip
    p.add_argument("overrides", nargs="*", metavar="key=value", help="SceneConfig overrides")
    return p


def cli(argv: list[str]) -> int:
    """Entry point of ``auralm synth scenes``."""
    args = build_parser().parse_args(argv)
    data = {k: v for k, v in vars(args).items() if v is not None and k not in ("overrides", "heldout")}
    if args.heldout is not None:
        data["heldout"] = comma_list(args.heldout)
    cfg = apply_overrides(SceneConfig.from_dict(data), args.overrides)
    synth_scenes(cfg)
    return 0
