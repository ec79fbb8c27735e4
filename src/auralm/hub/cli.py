"""``auralm models``: list known model names and where each resolves on this machine."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from auralm.core.errors import ModelNotFoundError
from auralm.hub.registry import KNOWN, cache_root, hub_offline, resolve, spec_for


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auralm models",
        description=(
            "List known model names and where each resolves: a local folder, the Hugging Face cache, "
            "an offline package (converted once into the auralm cache), or the hub. Nothing is "
            "converted unless --resolve is given."
        ),
        epilog="The cache is $AURALM_CACHE, else $XDG_CACHE_HOME/auralm, else ~/.cache/auralm. See docs/models.md.",
    )
    parser.add_argument(
        "names", nargs="*", help="names, HF ids or folders to resolve (default: all known names)"
    )
    parser.add_argument(
        "--resolve", action="store_true", help="convert offline packages that are not converted yet"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per name instead of a table"
    )
    return parser


def _row(name: str, convert: bool) -> dict:
    try:
        res = resolve(name, convert=convert)
    except ModelNotFoundError as exc:
        spec = spec_for(name)
        return {
            "name": name,
            "kind": spec.kind if spec else "auto",
            "source": "not available",
            "location": "-",
            "revision": "-",
            "description": str(exc),
            "ready": False,
        }
    row = asdict(res)
    row["path"] = str(res.path) if res.path is not None else None
    row["location"] = res.location
    return row


def cli(argv: list[str] | None = None) -> int:
    """Entry point of ``auralm models``; returns 0, or 1 when a name asked for is not available."""
    args = _parser().parse_args(argv)
    names = args.names or list(KNOWN)
    rows = [_row(name, args.resolve) for name in names]
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    else:
        print(f"cache: {cache_root()}   hub downloads: {'off' if hub_offline() else 'on'}")
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['kind']:<12}  {r['source']:<13}  {r['description']}")
            if r["source"] != "not available":
                print(f"{'':<{width}}  {'':<12}  {'':<13}  {r['location']}  [{r['revision']}]")
    missing = [r["name"] for r in rows if r["source"] == "not available"]
    if missing and args.names:
        print(f"auralm models: not available: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0
