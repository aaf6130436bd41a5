"""Experiment trackers (minirft/trackers.py), read back with each tracker's own reader:
TensorBoard's EventAccumulator, an MlflowClient on the SQLite store, W&B's offline run file
(its protobuf records), Trackio's SQLite storage. Fed by a real training run and by replaying a
fixture run's events.jsonl."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from train_fixtures import FakeJudge, make_tiny_model, write_prompts  # noqa: E402

from minirft.cli import cli  # noqa: E402
from minirft.errors import MinirftError  # noqa: E402
from minirft.events import read_events  # noqa: E402
from minirft.recipe import validate_recipe  # noqa: E402
from minirft.trackers import SAMPLE_COLUMNS, Trackers, replay, tracker_metrics  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "tui_runs" / "polite-20261123-010000"
os.environ.pop("MLFLOW_TRACKING_URI", None)  # the tests read the run dir's own store


def fixture_copy(tmp_path: Path) -> Path:
    run = tmp_path / FIXTURE.name
    run.mkdir()
    for f in FIXTURE.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    return run


def logged_steps(run: Path) -> dict[int, dict]:
    return {e["step"]: e["metrics"] for e in read_events(run / "events.jsonl") if e["type"] == "step"}


def tb_reader(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def mlflow_run(run: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("minirft")
    (found,) = client.search_runs([exp.experiment_id])
    return client, found


def test_metric_names_follow_trl():
    m = tracker_metrics({"reward": 0.5, "reward_std": 0.1, "rewards/judge": 0.4, "criteria/polite": 0.7,
                         "kl": 0.01, "entropy": 2.0, "clip_ratio": 0.0, "completion_length": 12.0,
                         "frac_reward_zero_std": 0.25, "lr": 1e-5, "judge_s": 3.0, "loss": None})
    assert m == {"reward": 0.5, "reward_std": 0.1, "rewards/judge/mean": 0.4, "criteria/polite": 0.7, "kl": 0.01,
                 "entropy": 2.0, "clip_ratio/region_mean": 0.0, "completions/mean_length": 12.0,
                 "frac_reward_zero_std": 0.25, "learning_rate": 1e-5, "timing/judge_s": 3.0}


def test_unknown_or_missing_tracker_is_a_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(MinirftError, match="unknown tracker 'neptune'"):
        Trackers(["neptune"], tmp_path)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(MinirftError, match=r"wandb is not installed: pip install 'minirft\[wandb\]'"):
        Trackers(["wandb"], tmp_path)


def test_recipe_accepts_a_name_a_list_or_none():
    base = {"name": "x", "rewards": [{"type": "length"}], "data": {"path": "d.jsonl"}}
    assert validate_recipe({**base, "logging": {"report_to": "tensorboard,mlflow"}}).logging.report_to == [
        "tensorboard", "mlflow"]
    assert validate_recipe({**base, "logging": {"report_to": "none"}}).logging.report_to == []
    with pytest.raises(MinirftError, match="logging.report_to"):
        validate_recipe({**base, "logging": {"report_to": ["comet"]}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real 3-step run of the tiny model with a (fake, deterministic) judge, to TensorBoard and MLflow."""
    from minirft.train.loop import train

    d = tmp_path_factory.mktemp("tracked")
    make_tiny_model(d / "model")
    write_prompts(d / "prompts.jsonl")
    recipe = validate_recipe({
        "name": "tracked",
        "policy": {"model": str(d / "model"), "lora": {"r": 4, "alpha": 8}},
        "judge": {"criteria": [{"name": "vowels", "question": "Mostly vowels?"}]},
        "rewards": [{"type": "python", "name": "letters", "function": "train_fixtures:toy_reward"}],
        "data": {"path": str(d / "prompts.jsonl")},
        "generation": {"group_size": 2, "max_new_tokens": 6},
        "training": {"steps": 3, "prompts_per_step": 2, "lr": 1e-2},
        "logging": {"samples_per_step": 2, "report_to": ["tensorboard", "mlflow"]},
    })
    return train(recipe, d / "run", judge=FakeJudge(), quiet=True)


def test_training_run_writes_tensorboard_events(trained):
    acc = tb_reader(trained)
    logged = logged_steps(trained)
    for name, key in (("reward", "reward"), ("kl", "kl"), ("rewards/letters/mean", "rewards/letters"),
                      ("criteria/vowels", "criteria/vowels"), ("completions/mean_length", "completion_length"),
                      ("timing/judge_s", "judge_s")):
        got = {e.step: e.value for e in acc.Scalars(name)}
        assert got.keys() == {1, 2, 3}
        for step, value in got.items():
            assert value == pytest.approx(logged[step][key], rel=1e-6, abs=1e-7)
    table = acc.Tensors("samples/text_summary")
    assert [t.step for t in table] == [1, 2, 3]
    text = table[0].tensor_proto.string_val[0].decode()
    assert text.startswith("| " + " | ".join(SAMPLE_COLUMNS))
    first = next(e for e in read_events(trained / "events.jsonl") if e["type"] == "sample")
    assert first["rationale"] and first["rationale"] in text  # the judge's rationale is in the table


def test_training_run_writes_an_mlflow_store(trained):
    client, run = mlflow_run(trained)
    assert run.info.status == "FINISHED" and run.info.run_name == trained.name
    assert run.data.params["training.steps"] == "3" and run.data.params["policy.lora.r"] == "4"
    logged = logged_steps(trained)
    history = client.get_metric_history(run.info.run_id, "reward")
    assert {m.step: m.value for m in history} == pytest.approx({s: m["reward"] for s, m in logged.items()})
    assert {m.step for m in client.get_metric_history(run.info.run_id, "rewards/letters/mean")} == {1, 2, 3}
    files = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert files == ["samples/step-000001.json", "samples/step-000002.json", "samples/step-000003.json"]
    import mlflow.artifacts

    table = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/samples/step-000002.json")
    assert table["columns"] == SAMPLE_COLUMNS and len(table["data"]) == 2
    samples = [e for e in read_events(trained / "events.jsonl") if e["type"] == "sample" and e["step"] == 2]
    assert [row[3] for row in table["data"]] == [s["completion"] for s in samples]
    assert [row[7] for row in table["data"]] == [s["rationale"] for s in samples]


def test_report_to_on_the_command_line(tmp_path):
    make_tiny_model(tmp_path / "model")
    write_prompts(tmp_path / "prompts.jsonl")
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "toy", "policy": {"model": "model", "lora": {"r": 4, "alpha": 8}},
        "rewards": [{"type": "length", "max_chars": 6}], "data": {"path": "prompts.jsonl"},
        "generation": {"group_size": 2, "max_new_tokens": 4}, "training": {"steps": 2, "prompts_per_step": 1},
    }))
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(recipe), "--report-to", "tensorboard", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "recipe.resolved.yaml").read_text())["logging"]["report_to"] == ["tensorboard"]
    assert {e.step for e in tb_reader(run).Scalars("rewards/length/mean")} == {1, 2}
    bad = CliRunner().invoke(cli, ["train", str(recipe), "--report-to", "comet", "--run-dir", str(tmp_path / "r2")])
    assert bad.exit_code == 1 and "logging.report_to" in bad.output and "Traceback" not in bad.output


def test_replay_a_fixture_run_to_tensorboard_and_mlflow(tmp_path):
    run = fixture_copy(tmp_path)
    result = CliRunner().invoke(cli, ["track", str(run), "--report-to", "tensorboard,mlflow"])
    assert result.exit_code == 0, result.output
    logged = logged_steps(run)
    acc = tb_reader(run)
    assert {e.step: e.value for e in acc.Scalars("criteria/polite")} == pytest.approx(
        {s: m["criteria/polite"] for s, m in logged.items()})
    warnings = [e for e in read_events(run / "events.jsonl") if e["type"] == "event" and e["kind"] == "warning"]
    texts = b" ".join(t.tensor_proto.string_val[0] for t in acc.Tensors("warnings/text_summary")).decode()
    assert all(w["message"] in texts for w in warnings)
    client, found = mlflow_run(run)
    assert len(client.get_metric_history(found.info.run_id, "kl")) == len(logged)
    detected = [w for w in warnings if w.get("detector") and isinstance(w.get("value"), (int, float))]
    for w in detected:
        history = client.get_metric_history(found.info.run_id, f"warnings/{w['detector']}")
        assert (w["step"], pytest.approx(w["value"])) in [(m.step, m.value) for m in history]
    import mlflow.artifacts

    text = mlflow.artifacts.load_text(f"{found.info.artifact_uri}/warnings.txt")
    assert all(w["message"] in text for w in warnings)


def _wandb_records(path: Path):
    """The records of a W&B offline run file: W&B's LevelDB-log framing (7-byte header, 32 KiB blocks,
    7-byte record headers, FULL/FIRST/MIDDLE/LAST chunks) around its own protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        if length == 0 and kind == 0:
            pos += 7
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def test_replay_to_wandb_offline(tmp_path):
    pytest.importorskip("wandb")
    run = fixture_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "minirft", "track", str(run), "--report-to", "wandb"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (offline,) = (run / "wandb").glob("offline-run-*")
    history: dict[int, dict] = {}
    for record in _wandb_records(next(offline.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            history.setdefault(items.get("_step"), {}).update(items)
    logged = logged_steps(run)
    assert {s: h["reward"] for s, h in history.items() if "reward" in h} == pytest.approx(
        {s: m["reward"] for s, m in logged.items()})
    assert all(history[s]["samples/_type"] == "table-file" for s in logged)  # one table per step
    table = json.loads((offline / "files" / history[1]["samples/path"]).read_text())
    first = next(e for e in read_events(run / "events.jsonl") if e["type"] == "sample")
    assert table["columns"] == SAMPLE_COLUMNS and table["data"][0][7] == first["rationale"]
    assert table["data"][0][3] == first["completion"]


def test_replay_to_trackio(tmp_path):
    pytest.importorskip("trackio")
    run = fixture_copy(tmp_path)
    env = dict(os.environ, TRACKIO_DIR=str(tmp_path / "trackio"))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "minirft", "track", str(run), "--report-to", "trackio"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    code = ("from trackio.sqlite_storage import SQLiteStorage; import json, sys;"
            f"print(json.dumps(SQLiteStorage.get_logs('minirft', {run.name!r}), default=str))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    logs = json.loads(out.stdout)
    rewards = {e["step"]: e["reward"] for e in logs if "reward" in e}
    assert rewards == pytest.approx({s: m["reward"] for s, m in logged_steps(run).items()})
    tables = [e for e in logs if "samples" in e]
    assert len(tables) == len(rewards) and tables[0]["samples"]["_value"][0]["rationale"]


def test_a_failing_tracker_is_switched_off_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    from minirft import trackers

    def broken(self, step, values, time):
        raise OSError("disk full")

    monkeypatch.setattr(trackers.TensorBoardSink, "scalars", broken)
    run = fixture_copy(tmp_path)
    replay(run, ["tensorboard", "mlflow"])
    assert "tracker tensorboard failed (OSError: disk full); switched off" in capsys.readouterr().err
    client, found = mlflow_run(run)
    assert len(client.get_metric_history(found.info.run_id, "reward")) == len(logged_steps(run))


def test_a_resumed_run_continues_the_same_tracker_runs(tmp_path):
    from minirft.train.loop import train

    make_tiny_model(tmp_path / "model")
    write_prompts(tmp_path / "prompts.jsonl")
    data = {
        "name": "resumed", "policy": {"model": str(tmp_path / "model"), "lora": {"r": 4, "alpha": 8}},
        "rewards": [{"type": "python", "name": "letters", "function": "train_fixtures:toy_reward"}],
        "data": {"path": str(tmp_path / "prompts.jsonl")},
        "generation": {"group_size": 2, "max_new_tokens": 4},
        "training": {"steps": 2, "prompts_per_step": 1}, "checkpoint": {"every": 1},
        "logging": {"report_to": ["tensorboard", "mlflow"]},
    }
    run = train(validate_recipe(data), tmp_path / "run", quiet=True)
    data["training"]["steps"] = 4
    train(validate_recipe(data), run, resume=True, quiet=True)
    client, found = mlflow_run(run)  # one MLflow run (mlflow_run unpacks exactly one)
    assert found.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(found.info.run_id, "reward")) == [1, 2, 3, 4]
    assert sorted(e.step for e in tb_reader(run).Scalars("reward")) == [1, 2, 3, 4]
