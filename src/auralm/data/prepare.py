"""``auralm prepare``: pair audio files with transcripts into a JSONL manifest.

The seed layout is one transcript per recording, with the same name::

    corpus/a.wav        corpus/a.txt
    corpus/spk1/b.flac  corpus/spk1/b.txt

Audio (any suffix in :data:`auralm.data.audio.AUDIO_SUFFIXES`) is searched recursively under
``--audio-dir`` and transcripts (``*.txt``) under ``--transcripts-dir`` (by default the same folder).
A pair matches when the relative path without suffix is the same; that relative stem (``spk1/b``)
becomes the row's ``id`` and, by default, its ``source``. Names beginning with ``.`` (hidden files,
macOS ``._x.wav`` forks, our own temp files) are ignored.

Every file is checked before anything is written: audio without a transcript, a transcript without
audio, empty transcripts, and audio that is corrupt, empty, has a zero sample rate or is silent
(:func:`auralm.data.audio.check_audio`). Without ``--skip-bad`` any such file is an error that names
every bad file with its reason, and nothing is written. With ``--skip-bad`` the manifest holds exactly
the good pairs and a summary of what was left out goes to stderr.

Rows carry ``id``, ``audio`` (relative to the manifest's folder when it lies under it, else absolute),
``text`` (stripped, runs of whitespace collapsed to one space), ``duration``, ``sample_rate``,
``source`` and ``split``. Splits are a hash of the source (:func:`split_for_source`), so the same input
always gives the same manifest and all rows of one source share a split.

The resolved config is saved beside the manifest as ``<out without suffix>.config.yaml``
(``data/train.jsonl`` -> ``data/train.config.yaml``); see :func:`config_path_for`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from auralm.core.config import Config, apply_overrides, help_field, save_config
from auralm.core.errors import AudioError, AuralmError, ConfigError, ManifestError
from auralm.core.progress import progress
from auralm.data.audio import AUDIO_SUFFIXES, AudioInfo, check_audio
from auralm.data.manifest import Row, relative_audio, split_for_source, write_manifest


class PrepareError(AuralmError):
    """Input files that cannot be paired or read; ``problems`` lists every one."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


@dataclasses.dataclass
class PrepareConfig(Config):
    """Settings of ``auralm prepare`` (saved beside the manifest)."""

    audio_dir: str = help_field("", help="folder searched recursively for audio files")
    transcripts_dir: str = help_field("", help="folder searched recursively for transcripts (default: audio_dir)")
    out: str = help_field("", help="the manifest to write (JSONL)")
    skip_bad: bool = help_field(False, help="leave bad or unmatched files out instead of failing")
    valid_frac: float = help_field(0.1, help="fraction of sources assigned to the valid split")
    test_frac: float = help_field(0.1, help="fraction of sources assigned to the test split")
    seed: int = help_field(0, help="seed of the split hash; change it to draw different splits")
    transcript_suffix: str = help_field(".txt", help="suffix of transcript files")
    source_regex: str = help_field(
        "",
        help="regex searched in the id (relative stem); its first group, or the whole match, is the row's "
        "source, so e.g. '^[^/]+' keeps each top folder in one split. Empty: the source is the id",
    )
    jobs: int = help_field(1, help="threads used to decode and check audio")

    def validate(self) -> None:
        for name in ("audio_dir", "out"):
            if not getattr(self, name):
                raise ConfigError(f"PrepareConfig.{name} is required")
        if not self.transcripts_dir:
            self.transcripts_dir = self.audio_dir
        if not self.transcript_suffix.startswith(".") or len(self.transcript_suffix) < 2:
            raise ConfigError(f"PrepareConfig.transcript_suffix must look like '.txt', got {self.transcript_suffix!r}")
        if self.transcript_suffix.lower() in AUDIO_SUFFIXES:
            raise ConfigError(f"PrepareConfig.transcript_suffix {self.transcript_suffix!r} is an audio suffix")
        try:
            split_for_source("", self.valid_frac, self.test_frac, self.seed)
        except ManifestError as exc:
            raise ConfigError(f"PrepareConfig: {exc}") from None
        try:
            re.compile(self.source_regex)
        except re.error as exc:
            raise ConfigError(f"PrepareConfig.source_regex {self.source_regex!r} is not a valid regex: {exc}") from None
        if self.jobs < 1:
            raise ConfigError(f"PrepareConfig.jobs must be >= 1, got {self.jobs}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One bad input file and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclasses.dataclass
class PrepareReport:
    """What :func:`prepare` found and wrote."""

    rows: list[Row]
    problems: list[Problem]
    audio_files: int
    transcript_files: int
    manifest: Path | None = None
    config_path: Path | None = None

    @property
    def split_counts(self) -> dict[str, int]:
        counts = Counter(row.split for row in self.rows)
        return {split: counts[split] for split in ("train", "valid", "test")}

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.split_counts.items())
        hours = sum(row.duration or 0.0 for row in self.rows) / 3600
        where = f" to {self.manifest}" if self.manifest else ""
        return f"wrote {len(self.rows)} row(s){where} ({splits}; {hours:.2f} h)"


def config_path_for(out: str | Path) -> Path:
    """Where the resolved config of manifest ``out`` is saved: ``train.jsonl`` -> ``train.config.yaml``."""
    out = Path(out)
    return out.with_name(f"{out.with_suffix('').name}.config.yaml")


def normalise_text(text: str) -> str:
    """Strip and collapse every run of whitespace (newlines included) to one space."""
    return " ".join(text.split())


def _visible(rel: Path) -> bool:
    return not any(part.startswith(".") for part in rel.parts)


def _scan(root: Path, keep: set[str] | str) -> dict[str, list[Path]]:
    """Files under ``root`` whose lower-case suffix is in ``keep``, grouped by relative stem (posix)."""
    wanted = {keep} if isinstance(keep, str) else keep
    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix.lower() in wanted and _visible(rel) and path.is_file():
            found.setdefault(rel.with_suffix("").as_posix(), []).append(path)
    return found


def _source_of(stem: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is None:
        return stem
    match = pattern.search(stem)
    if match is None:
        return stem
    return (match.group(1) if pattern.groups else match.group(0)) or stem


def _check(path: Path) -> AudioInfo | Problem:
    try:
        return check_audio(path)
    except AudioError as exc:
        reason = str(exc)
        prefix = f"{path}: "
        return Problem(path, reason[len(prefix) :] if reason.startswith(prefix) else reason)


def _read_transcript(path: Path) -> str | Problem:
    try:
        text = normalise_text(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return Problem(path, "transcript is not valid UTF-8")
    except OSError as exc:
        return Problem(path, f"cannot read transcript ({exc.strerror or exc})")
    return text if text else Problem(path, "transcript is empty")


def collect(cfg: PrepareConfig) -> PrepareReport:
    """Scan, pair and check every file; return the good rows and all problems. Writes nothing."""
    audio_dir, text_dir, out = Path(cfg.audio_dir), Path(cfg.transcripts_dir), Path(cfg.out)
    for name, folder in (("audio", audio_dir), ("transcripts", text_dir)):
        if not folder.is_dir():
            raise PrepareError(f"{name} folder {folder} does not exist or is not a folder")
    audio = _scan(audio_dir, AUDIO_SUFFIXES)
    texts = _scan(text_dir, cfg.transcript_suffix.lower())
    if not audio:
        raise PrepareError(
            f"no audio files under {audio_dir} (looked recursively for {', '.join(sorted(AUDIO_SUFFIXES))})"
        )
    problems: list[Problem] = []
    for stem, paths in audio.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            problems += [Problem(p, f"several audio files share the name {stem!r} ({names})") for p in paths]
        if stem not in texts:
            expected = text_dir / f"{stem}{cfg.transcript_suffix}"
            problems += [Problem(p, f"no transcript (expected {expected})") for p in paths]
    for stem, paths in texts.items():
        if stem not in audio:
            problems.append(Problem(paths[0], f"no audio file with the same name under {audio_dir}"))

    transcripts: dict[str, str] = {}
    for stem, paths in texts.items():
        result = _read_transcript(paths[0])
        if isinstance(result, Problem):
            problems.append(result)
        else:
            transcripts[stem] = result

    files = [p for paths in audio.values() for p in paths]
    infos: dict[Path, AudioInfo] = {}
    with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
        checked = zip(files, pool.map(_check, files))
        for path, result in progress(checked, desc="checking audio", total=len(files)):
            if isinstance(result, Problem):
                problems.append(result)
            else:
                infos[path] = result

    pattern = re.compile(cfg.source_regex) if cfg.source_regex else None
    rows: list[Row] = []
    for stem in sorted(audio):
        paths = audio[stem]
        # a good pair: one audio file that decoded, and a readable non-empty transcript
        if len(paths) != 1 or paths[0] not in infos or stem not in transcripts:
            continue
        path, info = paths[0], infos[paths[0]]
        source = _source_of(stem, pattern)
        rows.append(
            Row(
                id=stem,
                audio=relative_audio(path, out.parent),
                text=transcripts[stem],
                duration=round(info.duration, 6),
                sample_rate=info.sample_rate,
                source=source,
                split=split_for_source(source, cfg.valid_frac, cfg.test_frac, cfg.seed),
            )
        )
    problems.sort(key=lambda p: (str(p.path), p.reason))
    return PrepareReport(rows, problems, sum(len(p) for p in audio.values()), sum(len(p) for p in texts.values()))


def run(cfg: PrepareConfig) -> PrepareReport:
    """Check everything, then write the manifest and its config, or raise :class:`PrepareError`."""
    report = collect(cfg)
    if report.problems and not cfg.skip_bad:
        lines = "\n  ".join(str(p) for p in report.problems)
        raise PrepareError(
            f"{len(report.problems)} problem(s) with the input files; nothing was written. "
            f"Fix them, or rerun with --skip-bad to leave them out:\n  {lines}",
            report.problems,
        )
    if not report.rows:
        raise PrepareError(
            f"no good audio/transcript pairs left (all {report.audio_files} audio file(s) were skipped); "
            "nothing was written",
            report.problems,
        )
    out = Path(cfg.out)
    write_manifest(out, report.rows)
    report.manifest = out
    report.config_path = save_config(cfg, out.parent, config_path_for(out).name)
    return report


def prepare(
    audio_dir: str | Path,
    transcripts_dir: str | Path | None,
    out: str | Path,
    skip_bad: bool = False,
    **settings: object,
) -> PrepareReport:
    """Python entry point of ``auralm prepare``; ``settings`` are other :class:`PrepareConfig` fields."""
    data = dict(settings, audio_dir=str(audio_dir), transcripts_dir=str(transcripts_dir or audio_dir))
    data.update(out=str(out), skip_bad=skip_bad)
    return run(PrepareConfig.from_dict(data))


def _help(name: str) -> str:
    field = {f.name: f for f in dataclasses.fields(PrepareConfig)}[name]
    shown = field.default != "" and field.default is not False
    return f"{field.metadata['help']} (default: {field.default!r})" if shown else field.metadata["help"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auralm prepare",
        description="Pair audio files with same-named transcripts into a JSONL manifest. Every file is "
        "checked first; without --skip-bad any bad or unmatched file is an error and nothing is written. "
        "The resolved config is saved beside the manifest as <out without suffix>.config.yaml.",
    )
    parser.add_argument("--audio-dir", required=True, help=_help("audio_dir"))
    parser.add_argument("--transcripts-dir", default=None, help=_help("transcripts_dir"))
    parser.add_argument("--out", required=True, help=_help("out"))
    parser.add_argument("--skip-bad", action="store_true", help=_help("skip_bad"))
    parser.add_argument("--valid-frac", type=float, default=0.1, help=_help("valid_frac"))
    parser.add_argument("--test-frac", type=float, default=0.1, help=_help("test_frac"))
    parser.add_argument("--seed", type=int, default=0, help=_help("seed"))
    parser.add_argument("--transcript-suffix", default=".txt", help=_help("transcript_suffix"))
    parser.add_argument("--source-regex", default="", help=_help("source_regex"))
    parser.add_argument("--jobs", type=int, default=1, help=_help("jobs"))
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override any config field")
    return parser


def cli(argv: list[str]) -> int:
    """``auralm prepare ...``; returns 0, or raises an :class:`AuralmError` (the CLI prints it, exit 2)."""
    args = build_parser().parse_args(argv)
    audio_dir = Path(args.audio_dir).resolve()
    cfg = PrepareConfig(
        audio_dir=str(audio_dir),
        transcripts_dir=str(Path(args.transcripts_dir).resolve() if args.transcripts_dir else audio_dir),
        out=str(Path(args.out).resolve()),
        skip_bad=args.skip_bad,
        valid_frac=args.valid_frac,
        test_frac=args.test_frac,
        seed=args.seed,
        transcript_suffix=args.transcript_suffix,
        source_regex=args.source_regex,
        jobs=args.jobs,
    )
    cfg = apply_overrides(cfg, args.overrides)
    report = run(cfg)
    if report.problems:
        print(f"skipped {len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
    print(report.summary())
    print(f"config: {report.config_path}")
    return 0
