"""``auralm serve`` and ``auralm ui``: parse flags into a :class:`~auralm.serve.config.ServeConfig`, load the
checkpoints (:meth:`Service.load <auralm.serve.service.Service.load>`), run uvicorn. The flags are the
config's fields (``max_body_mb`` -> ``--max-body-mb``) with its help texts."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys

from auralm.serve.config import ServeConfig

EPILOG = """endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (hear, chat and caption models),
POST /v1/audio/transcriptions (hear), POST /v1/audio/speech (sound), POST /v1/images/generations (imagine),
and the UI at /ui with --ui. Examples: docs/serving.md."""


def _parser(prog: str, description: str, ui: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=EPILOG)
    parser.add_argument("--checkpoint", action="append", required=True, metavar="DIR",
                        help="checkpoint folder to serve (auralm.load); repeat for several models")
    parser.add_argument("--name", action="append", metavar="NAME",
                        help="model name of the checkpoint in the same position (default: its folder's name)")
    parser.add_argument("--device", help="device for hear models (e.g. cuda); default: the pipeline's")
    for f in dataclasses.fields(ServeConfig):
        if f.name == "ui" and ui:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata.get("help", "")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=f.default, help=text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            shown = f" (default: {f.default:g})" if isinstance(f.default, float) else f" (default: {f.default!r})"
            parser.add_argument(flag, type=kind, default=f.default, help=text + shown, metavar=f.name.upper())
    return parser


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run(argv: list[str], prog: str, description: str, ui: bool) -> int:
    args = _parser(prog, description, ui).parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig) if hasattr(args, f.name)}
    if ui:
        values["ui"] = True
    cfg = ServeConfig.from_dict(values)
    if not cfg.api_key and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"{prog}: warning: listening on {cfg.host} without --api-key: anyone who reaches it may use it",
              file=sys.stderr)
    os.environ.setdefault("AURALM_PROGRESS", "0")  # no progress bars per request
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    import uvicorn

    from auralm.serve.openai_api import create_app
    from auralm.serve.service import Service

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    service = Service.load(cfg, args.checkpoint, args.name, device=args.device, log=log)
    port = cfg.port or _free_port(cfg.host)
    app = create_app(service, cfg)
    where = f"http://{'[' + cfg.host + ']' if ':' in cfg.host else cfg.host}:{port}"
    log(f"[serve] {', '.join(service.models)} at {where}/v1" + (f"  (UI: {where}/ui)" if cfg.ui else ""))
    # the listening line is printed by uvicorn ("Uvicorn running on ..."); tests wait for /health instead
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=port, log_level="warning", timeout_keep_alive=30,
                                           timeout_graceful_shutdown=10))
    stop = server.handle_exit

    def handle_exit(sig: int, frame: object) -> None:  # SIGINT/SIGTERM: new requests get 503 while it drains
        app.state.gate.closing = True
        stop(sig, frame)

    server.handle_exit = handle_exit
    server.run()
    return 0


def serve_cli(argv: list[str]) -> int:
    if not argv:
        argv = ["--help"]
    return run(argv, "auralm serve", "Serve checkpoints over an OpenAI-compatible HTTP API.", ui=False)


def ui_cli(argv: list[str]) -> int:
    if not argv:
        argv = ["--help"]
    return run(argv, "auralm ui", "Serve checkpoints with the Gradio UI at /ui (and the same HTTP API).", ui=True)
