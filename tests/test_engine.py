"""The training engine with a stand-in task: schedule, caps and stopped_by, resume policy, extra state, RNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from auralm.core.errors import ConfigError
from auralm.training import loop
from auralm.training.config import OptimConfig, RunConfig, config_differences, merge_dicts
from auralm.training.loop import Task, fit
from auralm.training.schedule import lr_lambda


class Regression(Task):
    """y = x . w on random rows drawn from a registered generator; an extra counter as recipe state."""

    def __init__(self, seed: int = 0, batch: int = 4):
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
        self.gen = torch.Generator().manual_seed(seed)
        self.generators = {"data": self.gen}
        self.batch, self.counter = batch, 0

    def global_batch(self, step: int) -> torch.Tensor:
        return torch.randn(self.batch, 3, generator=self.gen)

    def loss(self, x: torch.Tensor) -> dict:
        y = x @ torch.tensor([1.0, -2.0, 0.5])
        loss = (self.model(x).squeeze(-1) - y).pow(2).mean()
        return {"loss": loss, "n": len(x), "count/rows": len(x)}

    def end_step(self, step: int) -> None:
        self.counter += 1

    def validate(self, step: int, logger) -> dict:  # noqa: ANN001
        torch.rand(3)  # the engine keeps the training streams untouched
        return {"valid/counter": float(self.counter)}

    def save_weights(self, folder: Path, step: int) -> None:
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(folder / "w.safetensors"))

    def load_weights(self, folder: Path) -> None:
        self.model.load_state_dict(load_file(str(folder / "w.safetensors")))

    def state_dict(self) -> dict:
        return {"counter": self.counter}

    def load_state_dict(self, state: dict) -> None:
        self.counter = state["counter"]


def cfg(out: Path, **kw) -> RunConfig:
    run = {k: kw.pop(k) for k in ("resume", "log_every", "eval_every", "save_every", "logger") if k in kw}
    optim = OptimConfig(**{"max_steps": 6, "batch_size": 4, "lr": 0.05, "warmup_steps": 1, **kw})
    return RunConfig(recipe="test", out=str(out), optim=optim, **{"logger": "none", "log_every": 1, **run})


def metrics(ckpt: Path) -> dict:
    return json.loads((ckpt / "metrics.json").read_text())


def test_one_schedule_warmup_cosine_linear_constant_and_a_floor():
    assert [lr_lambda(s, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_lambda(4, 4, 20) == 1.0 and lr_lambda(12, 4, 20) == pytest.approx(0.5) and lr_lambda(20, 4, 20) == 0.0
    assert lr_lambda(30, 4, 20) == 0.0  # past the end: stays at the floor
    # S5's "cosine to 10 %": the same curve squeezed into [0.1, 1]
    assert lr_lambda(20, 4, 20, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_lambda(12, 4, 20, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_lambda(7, 2, 12, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_lambda(7, 2, 12, "linear") == pytest.approx(0.5) and lr_lambda(7, 2, 12, "linear", 0.2) == pytest.approx(0.6)
    assert lr_lambda(7, 2, 12, "constant", 0.1) == 1.0 and lr_lambda(0, 0, 12, "constant") == 1.0


def test_the_schedule_is_the_only_cosine_in_the_package():
    src = Path(loop.__file__).parents[1]
    # a cosine schedule is cos(pi * progress); trigonometry elsewhere (drawing shapes) is not one
    hits = [p for p in src.rglob("*.py") if any(f"{m}.cos({m}.pi" in p.read_text() for m in ("math", "np", "torch"))]
    assert [p.relative_to(src).as_posix() for p in hits] == ["training/schedule.py"]


def test_a_run_writes_checkpoints_logs_and_stopped_by(tmp_path, capsys):
    task = Regression()
    ckpt = fit(task, cfg(tmp_path / "run", save_every=2, eval_every=3), name="stub")
    assert ckpt == tmp_path / "run" / "checkpoints" / "step-000006"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000004", "step-000006"]
    m = metrics(ckpt)
    assert (m["stopped_by"], m["steps_done"], m["steps_planned"], m["max_steps"]) == ("max_steps", 6, 6, 6)
    assert m["valid"]["counter"] == 6 and m["trainable_params"] == sum(p.numel() for p in task.model.parameters())
    assert set(m["train"]) == {"loss", "grad_norm", "rows_per_s"} and m["lr"] > 0
    records = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "valid/counter" in r] == [3, 6]
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    assert state["extra"] == {"counter": 6} and "data" in state["rng"][0]["generators"]
    assert "WARNING" not in capsys.readouterr().err
    # stop_after: a planned early stop
    cut = fit(Regression(), cfg(tmp_path / "cut", stop_after=2), name="stub")
    assert (metrics(cut)["stopped_by"], metrics(cut)["steps_done"], metrics(cut)["steps_planned"]) == ("stop_after", 2, 2)


def test_the_time_guard_stops_loudly_and_is_recorded(tmp_path, capsys, monkeypatch):
    now = [0.0]

    def clock() -> float:  # every reading is 20 s later
        now[0] += 20.0
        return now[0]

    monkeypatch.setattr(loop, "clock", clock)
    ckpt = fit(Regression(), cfg(tmp_path / "run", max_steps=50, max_minutes=1.0), name="stub")
    m = metrics(ckpt)
    assert m["stopped_by"] == "max_minutes" and m["steps_planned"] == 50 and 0 < m["steps_done"] < 50
    assert ckpt.name == f"step-{m['steps_done']:06d}"
    err = capsys.readouterr().err
    assert f"WARNING [stub] stopped by max_minutes at step {m['steps_done']} of 50" in err
    # the same command continues the run (a guard is not the run's definition)
    monkeypatch.setattr(loop, "clock", __import__("time").perf_counter)
    done = fit(Regression(), cfg(tmp_path / "run", max_steps=50, max_minutes=1.0), name="stub")
    assert metrics(done)["stopped_by"] == "max_steps" and metrics(done)["steps_done"] == 50


def test_resume_is_exact_and_restores_extra_state_and_generators(tmp_path):
    full = fit(Regression(), cfg(tmp_path / "full", eval_every=2), name="stub")
    fit(Regression(), cfg(tmp_path / "cut", eval_every=2, stop_after=3), name="stub")
    task = Regression()
    resumed = fit(task, cfg(tmp_path / "cut", eval_every=2), name="stub")
    assert task.counter == 6
    a, b = load_file(str(full / "w.safetensors")), load_file(str(resumed / "w.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [[{k: v for k, v in json.loads(x).items() if "per_s" not in k and "time/" not in k}
             for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()] for d in ("full", "cut")]
    assert [r for r in logs[0] if "train/loss" in r] == [r for r in logs[1] if "train/loss" in r]


def test_gradient_accumulation_gives_the_same_update(tmp_path):
    class NoDropout(Regression):  # dropout draws depend on the micro-batch shapes
        def __init__(self):
            super().__init__()
            self.model[1].p = 0.0

    one = fit(NoDropout(), cfg(tmp_path / "one"), name="stub")
    four = fit(NoDropout(), cfg(tmp_path / "four", grad_accum=4), name="stub")
    a, b = load_file(str(one / "w.safetensors")), load_file(str(four / "w.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_policy_is_the_same_for_every_run(tmp_path):
    fit(Regression(), cfg(tmp_path / "run", max_steps=2), name="stub")
    with pytest.raises(ConfigError, match="resume=false will not overwrite"):
        fit(Regression(), cfg(tmp_path / "run", max_steps=2, resume="false"), name="stub")
    with pytest.raises(ConfigError, match="resume=true but"):
        fit(Regression(), cfg(tmp_path / "fresh", resume=True), name="stub")
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(ConfigError, match=r"another config \(differs in optim.lr\)"):
        fit(Regression(), cfg(tmp_path / "run", max_steps=2, lr=0.5), name="stub")
    # a finished run returns at once; a longer max_steps continues it
    assert fit(Regression(), cfg(tmp_path / "run", max_steps=2), name="stub").name == "step-000002"
    assert fit(Regression(), cfg(tmp_path / "run", max_steps=3, resume="true"), name="stub").name == "step-000003"


def test_run_config_names_and_helpers():
    with pytest.raises(ConfigError, match="resume must be one of auto, true, false"):
        RunConfig(resume="maybe")
    assert RunConfig(resume=False).resume == "false" and RunConfig(resume="TRUE").resume == "true"
    with pytest.raises(ConfigError, match="min_lr_frac"):
        OptimConfig(min_lr_frac=1.5)
    a, b = RunConfig(), RunConfig(log_every=3, optim=OptimConfig(max_steps=9, lr=0.1))
    assert config_differences(a, b) == ["optim.lr"]
    assert merge_dicts({"optim": {"seed": 1, "lr": 2}}, {"optim": {"lr": 3}, "x": 1}) == {"optim": {"seed": 1, "lr": 3}, "x": 1}


def test_the_engine_imports_only_core():
    import ast

    src = Path(loop.__file__).parent
    for path in src.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    assert not name.startswith("auralm.") or name.startswith(("auralm.core", "auralm.training")), (path, name)
