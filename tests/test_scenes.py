"""Tests of `auralm synth scenes`: determinism, answers recomputed from the objects, held-out
combinations, splits by scene, the second renderer, bad config, and what the command writes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auralm.__main__ import main
from auralm.core.config import apply_overrides
from auralm.core.errors import ConfigError, ManifestError
from auralm.data import scenes
from auralm.data.scenes import SceneConfig

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _cfg(out: Path | str = "unused", **kw) -> SceneConfig:
    return SceneConfig(out=str(out), **{"n": 8, "image_size": 64, **kw})


def _folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "config.yaml":
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def many() -> tuple[SceneConfig, list[dict]]:
    """300 scene records (not drawn): enough for every question type and held-out scenes in valid/test."""
    cfg = _cfg(n=300)
    return cfg, [scenes.make_scene(cfg, i) for i in range(cfg.n)]


# -- answers, recomputed here from the objects alone ----------------------------------------------


def _fits(obj: dict, ref: dict) -> bool:
    return all(obj[k] == v for k, v in ref.items())


def _the(objs: list[dict], ref: dict) -> dict:
    found = [o for o in objs if _fits(o, ref)]
    assert len(found) == 1, f"reference {ref} is ambiguous or empty: {len(found)} objects"
    return found[0]


def _expected(objs: list[dict], kind: str, query: dict) -> str:
    if kind == "count":
        return WORDS[len([o for o in objs if _fits(o, query)])]
    if kind == "exists":
        return "yes" if any(_fits(o, query) for o in objs) else "no"
    obj = _the(objs, query["ref"])
    if kind == "colour":
        return obj["colour"]
    if kind == "shape":
        return obj["shape"]
    x = obj["position"]["x"]
    if "of" in query:
        other = _the(objs, query["of"])
        assert abs(x - other["position"]["x"]) > 0.05, "a relative position must not be borderline"
        return "left" if x < other["position"]["x"] else "right"
    value = x if query["axis"] == "x" else obj["position"]["y"]
    assert not 0.30 < value < 0.70, f"an absolute position must be clear, got {value}"
    first, last = ("left", "right") if query["axis"] == "x" else ("top", "bottom")
    return first if value < 0.5 else last


def test_every_answer_is_right_for_the_objects(many):
    cfg, records = many
    seen = {t: 0 for t in scenes.QUESTION_TYPES}
    answers: dict[str, set] = {t: set() for t in scenes.QUESTION_TYPES}
    for rec in records:
        objs = rec["objects"]
        for q in rec["qa"]:
            assert q["answer"] == _expected(objs, q["type"], q["query"]), (rec["id"], q)
            assert len(q["answer"].split()) == 1
            for key in ("colour", "shape"):  # the question names what its query refers to
                for ref in (q["query"].get("ref", q["query"]), q["query"].get("of", {})):
                    if key in ref:
                        assert ref[key] in q["question"], q
            seen[q["type"]] += 1
            answers[q["type"]].add(q["answer"])
        for conv in rec["conversations"]:
            msgs = conv["messages"]
            assert [m["role"] for m in msgs] == ["user", "assistant"] * len(conv["types"])
            for turn, (kind, i) in enumerate(zip(conv["types"], conv["qa"])):
                reply = msgs[2 * turn + 1]["content"]
                assert reply in rec["captions"] if i == -1 else reply == rec["qa"][i]["answer"]
                assert kind == ("caption" if i == -1 else rec["qa"][i]["type"])
    assert min(seen.values()) > 50, seen
    assert answers["exists"] == {"yes", "no"}
    assert answers["position"] == {"left", "right", "top", "bottom"}
    assert answers["colour"] == set(cfg.colours) and answers["shape"] == set(cfg.shapes)
    assert {"zero", "one", "two", "three"} <= answers["count"]


def test_objects_fit_their_cells_and_never_overlap(many):
    _, records = many
    for rec in records:
        objs = rec["objects"]
        assert 1 <= len(objs) <= 3
        assert len({(o["colour"], o["shape"]) for o in objs}) == len(objs)
        for o in objs:
            col = ("left", "centre", "right").index(o["position"]["column"])
            row = ("top", "middle", "bottom").index(o["position"]["row"])
            assert col / 3 <= o["position"]["x"] - o["radius"] and o["position"]["x"] + o["radius"] <= (col + 1) / 3
            assert row / 3 <= o["position"]["y"] - o["radius"] and o["position"]["y"] + o["radius"] <= (row + 1) / 3
            x0, y0, x1, y1 = o["bbox"]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert o["size"] in ("small", "large") and (o["radius"] >= 0.13) == (o["size"] == "large")


def test_wording_varies_with_both_spellings(many):
    _, records = many
    texts = [q["question"] for r in records for q in r["qa"]] + [c for r in records for c in r["captions"]]
    joined = "\n".join(texts)
    for word in ("colour", "color", "coloured", "colored", "centre", "center"):
        assert re.search(rf"\b{word}\b", joined), word
    colour_questions = {q["question"] for r in records for q in r["qa"] if q["type"] == "colour"}
    assert len(colour_questions) > 40
    for rec in records:
        assert len(rec["captions"]) == len(set(rec["captions"])) >= 3
        assert rec["captions"][0] == scenes.canonical_caption(rec["objects"])
    follow_ups = [m["content"] for r in records for c in r["conversations"] for m in c["messages"]
                  if m["content"].startswith("And the")]  # fmt: skip
    assert follow_ups, "some conversations lean on the turn before"


# -- held-out combinations and splits ----------------------------------------------------------------


def _all_text(rec: dict) -> str:
    parts = list(rec["captions"]) + [q["question"] + " " + q["answer"] for q in rec["qa"]]
    parts += [m["content"] for c in rec["conversations"] for m in c["messages"]]
    return "\n".join(parts).lower()


def test_heldout_combinations_never_reach_training(many):
    cfg, records = many
    held = cfg.heldout_pairs()
    assert held == {("blue", "triangle"), ("yellow", "circle"), ("purple", "square")}
    train = [r for r in records if r["split"] == "train"]
    other = [r for r in records if r["split"] != "train"]
    for rec in train:
        assert not rec["heldout"]
        assert not any((o["colour"], o["shape"]) in held for o in rec["objects"])
        text = _all_text(rec)
        for colour, shape in held:
            assert not re.search(rf"{colour} (small |large |big )?{shape}", text), (rec["id"], colour, shape)
    with_held = [r for r in other if r["heldout"]]
    assert with_held, "valid/test scenes show the held-out combinations"
    for rec in other:
        flags = [o["heldout"] for o in rec["objects"]]
        assert flags == [(o["colour"], o["shape"]) in held for o in rec["objects"]]
        assert rec["heldout"] == any(flags)
    assert any(q["heldout"] for r in with_held for q in r["qa"])
    # each held-out colour and shape still appears in training, with other partners
    train_pairs = {(o["colour"], o["shape"]) for r in train for o in r["objects"]}
    assert {c for c, _ in train_pairs} == set(cfg.colours) and {s for _, s in train_pairs} == set(cfg.shapes)


def test_splits_are_by_scene_and_stable(many):
    cfg, records = many
    counts = {k: sum(r["split"] == k for r in records) for k in ("train", "valid", "test")}
    assert counts["train"] > 200 and counts["valid"] > 10 and counts["test"] > 10, counts
    assert len({r["id"] for r in records}) == len(records) == len({r["image"] for r in records})
    small = _cfg(n=20)
    for i in (0, 7, 19):  # a scene depends on the seed and its index, not on n
        assert scenes.make_scene(small, i) == records[i]
    other_seed = [scenes.make_scene(_cfg(n=300, seed=1), i) for i in range(40)]
    assert [r["split"] for r in other_seed] != [r["split"] for r in records[:40]]


# -- drawing -----------------------------------------------------------------------------------------

PALETTE = {name: np.array(shades, dtype=float) for name, shades in scenes.COLOURS.items()}


def _dominant_colour(pixels: np.ndarray, names: list[str]) -> tuple[str, float]:
    """Most frequent colour name among the most saturated pixels (background, outlines and the
    anti-aliased blends at the edges left out), and the share of the box those pixels cover."""
    flat = pixels.reshape(-1, 3).astype(float)
    sat = flat.max(1) - flat.min(1)
    if sat.max() <= 40:
        return "none", 0.0
    core = flat[sat >= max(40.0, 0.7 * sat.max())]
    refs = [(name, shade) for name in names for shade in list(PALETTE[name]) + [np.array(scenes.ALT_COLOURS[name])]]
    dist = np.stack([np.linalg.norm(core - shade, axis=1) for _, shade in refs], 1)
    votes = [refs[i][0] for i in dist.argmin(1)]
    best = max(set(votes), key=votes.count)
    return best, len(core) / len(flat)


@pytest.mark.parametrize("size", [64, 224])
def test_both_renderers_draw_each_object_in_its_box(many, size):
    cfg, records = many
    for rec in records[:12]:
        for render in (scenes.render_scene, scenes.render_scene_alt):
            image = np.asarray(render(rec, size))
            assert image.shape == (size, size, 3)
            ink = np.zeros((size, size), dtype=bool)
            for obj in rec["objects"]:
                x0, y0, x1, y1 = scenes.object_bbox(obj, size)
                name, share = _dominant_colour(image[y0:y1, x0:x1], cfg.colours)
                assert name == obj["colour"], (render.__name__, rec["id"], obj, name)
                assert share > 0.05, (render.__name__, rec["id"], obj, share)
                ink[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
            background = np.median(image[~ink], axis=0)
            far = np.abs(image.astype(int) - background).max(-1) > 60
            assert not (far & ~ink).any(), f"{render.__name__} drew outside the recorded boxes in {rec['id']}"


def test_alt_renderer_is_another_program(many):
    _, records = many
    rec = records[0]
    a, b = np.asarray(scenes.render_scene(rec)), np.asarray(scenes.render_scene_alt(rec))
    assert a.shape == b.shape == (64, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 2
    assert (b == 255).all(-1).mean() > 0.5  # a white background
    assert np.array_equal(np.asarray(scenes.render_scene(rec)), a)


# -- files, CLI, resume -----------------------------------------------------------------------------


def test_cli_writes_what_it_promises(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["synth", "scenes", "--out", str(out), "--n", "6", "--seed", "3", "--image-size", "64",
                 "--heldout", "red circle, green square", "conversations=1"]) == 0  # fmt: skip
    assert "6 scenes (6 drawn, 0 reused" in capsys.readouterr().err
    records = scenes.read_scenes(out)
    assert len(records) == 6 == len((out / "scenes.jsonl").read_text().splitlines())
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(Path(r["image"]).name for r in records)
    for rec in records:
        with Image.open(out / rec["image"]) as im:
            assert (im.format, im.size, im.mode) == ("PNG", (64, 64), "RGB")
        assert np.array_equal(np.asarray(Image.open(out / rec["image"])), np.asarray(scenes.render_scene(rec)))
        assert set(rec) >= {"id", "image", "split", "objects", "captions", "qa", "conversations", "heldout"}
        assert len(rec["conversations"]) == 1
    saved = SceneConfig.from_yaml(out / "config.yaml")
    assert saved.heldout == ["red circle", "green square"] and saved.n == 6 and saved.image_size == 64


def test_same_seed_identical_files_other_seed_differs(tmp_path):
    a = _folder_hash(scenes.synth_scenes(_cfg(tmp_path / "a", seed=2)).parent)
    b = _folder_hash(scenes.synth_scenes(_cfg(tmp_path / "b", seed=2)).parent)
    c = _folder_hash(scenes.synth_scenes(_cfg(tmp_path / "c", seed=4)).parent)
    assert a == b != c


def test_rerun_skips_valid_images_and_repairs(tmp_path, capsys):
    cfg = _cfg(tmp_path / "r", n=6)
    path = scenes.synth_scenes(cfg)
    before = _folder_hash(path.parent)
    records = scenes.read_scenes(path)
    kept, lost, broken = (path.parent / r["image"] for r in records[:3])
    mtime = kept.stat().st_mtime_ns
    lost.unlink()
    broken.write_bytes(b"not a png")
    (path.parent / "images" / "999999-0123abcd.png").write_bytes(b"stale")
    capsys.readouterr()
    scenes.synth_scenes(cfg)
    assert "(2 drawn, 4 reused" in capsys.readouterr().err
    assert kept.stat().st_mtime_ns == mtime
    assert _folder_hash(path.parent) == before


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["n=0"], "at least 1"),
        (["colours=[red, teal]"], "'teal'"),
        (["shapes=[circle, hexagon]"], "'hexagon'"),
        (["heldout=[teal circle]"], "'teal'"),
        (["heldout=[red]"], "'colour shape'"),
        (["heldout=[red circle, red square, red triangle]"], "every combination with 'red'"),
        (["image_size=16"], "image_size"),
        (["max_objects=10"], "max_objects"),
        (["large_radius=[0.1, 0.3]"], "large_radius"),
        (["nope=1"], "nope"),
    ],
)
def test_bad_config_is_a_clear_error(overrides, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        apply_overrides(_cfg(), overrides)


def test_bad_command_line_exits_2_with_one_line(tmp_path, capsys):
    assert main(["synth", "scenes", "--out", str(tmp_path / "x"), "--n", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("auralm synth scenes: error:") and "at least 1" in err
    assert not (tmp_path / "x").exists(), "nothing is written for a bad config"
    (tmp_path / "file").write_text("x")
    assert main(["synth", "scenes", "--out", str(tmp_path / "file"), "--n", "1"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_read_scenes_names_bad_lines(tmp_path):
    good = scenes.make_scene(_cfg(), 0)
    (tmp_path / "scenes.jsonl").write_text(json.dumps(good) + "\n{oops\n" + json.dumps({"id": "x"}) + "\n")
    with pytest.raises(ManifestError, match=r"line 2: not JSON.*line 3: missing image"):
        scenes.read_scenes(tmp_path)
    with pytest.raises(ManifestError, match="no such file"):
        scenes.read_scenes(tmp_path / "nothing")


def test_pictures_drawn_in_threads_are_the_files_drawn_one_at_a_time(tmp_path):
    from auralm.data.scenes import SceneConfig, synth_scenes

    def files(jobs: int) -> dict[str, bytes]:
        out = tmp_path / f"jobs{jobs}"
        synth_scenes(SceneConfig(out=str(out), n=12, image_size=64, jobs=jobs))
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
                and p.name != "config.yaml"}  # fmt: skip

    one, three = files(1), files(3)
    assert len(one) == 13 and one == three  # 12 pictures + scenes.jsonl, byte for byte
    with pytest.raises(ConfigError, match="jobs"):
        SceneConfig(out=str(tmp_path), jobs=0)
