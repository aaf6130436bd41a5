"""Experiment trackers (``logging.report_to``): TensorBoard, MLflow, Weights & Biases, Trackio.

They are written from the event stream, in this one place: :class:`Trackers` is a listener of the
run's :class:`~minirft.events.EventLog`, fed every record the trainer appends to ``events.jsonl``
(and :func:`replay` feeds it a finished run's log, for ``minirft track``). Nothing in the training
loop knows about trackers.

Metric names are TRL's where TRL has one (``reward``, ``reward_std``, ``rewards/<name>/mean``, ``kl``,
``entropy``, ``clip_ratio/region_mean``, ``completions/mean_length``, ``frac_reward_zero_std``,
``loss``, ``grad_norm``, ``learning_rate``), plus minirft's own: ``criteria/<name>`` (mean P(pass)),
``timing/{generation,judge,update,step}_s``, ``timing/tokens_per_s``, ``judge/errors`` and one
``warnings/<detector>`` value per detector warning. Each step's logged samples go out as a table with
the judge's rationale (a ``wandb.Table``, TensorBoard text, an MLflow JSON artifact, a ``trackio.Table``).

Offline by default: TensorBoard writes ``RUN_DIR/tensorboard``; MLflow writes a SQLite store and its
artifacts under ``RUN_DIR/mlflow`` unless ``MLFLOW_TRACKING_URI`` names another; W&B runs in offline
mode (``RUN_DIR/wandb``, ``wandb sync`` uploads it later) unless ``WANDB_API_KEY`` or ``WANDB_MODE`` is
set; Trackio writes its local SQLite store (``TRACKIO_DIR``, default ``~/.cache/huggingface/trackio``).
Each is an optional extra (``pip install 'minirft[tensorboard]'`` …), imported only when asked for.
A tracker that fails mid-run is switched off with one line on stderr; training goes on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from minirft.errors import MinirftError

TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio")
# tracker -> the module that must be importable (the extra of the same name installs it)
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}

RENAMED = {
    "clip_ratio": "clip_ratio/region_mean",
    "completion_length": "completions/mean_length",
    "lr": "learning_rate",
    "generation_s": "timing/generation_s",
    "judge_s": "timing/judge_s",
    "update_s": "timing/update_s",
    "step_s": "timing/step_s",
    "tokens_per_s": "timing/tokens_per_s",
    "judge_errors": "judge/errors",
    "gpu_peak_gb": "memory/gpu_peak_gb",
}
SAMPLE_COLUMNS = ["step", "group", "prompt", "completion", "reward", "advantage", "criteria", "rationale"]


def tracker_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """A ``step`` record's metrics under the trackers' names (TRL's where it has one); None/NaN dropped."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            continue
        if key.startswith("rewards/"):
            name = f"{key}/mean"
        else:
            name = RENAMED.get(key, key)
        out[name] = float(value)
    return out


def sample_table(step: int, samples: list[dict]) -> list[list[Any]]:
    """Rows of the per-step sample table (columns: :data:`SAMPLE_COLUMNS`)."""
    rows = []
    for s in samples:
        criteria = " ".join(f"{k}={v:.3f}" for k, v in (s.get("criteria") or {}).items() if v is not None)
        rationale = s.get("rationale") or "; ".join(
            f"{k}: {v}" for k, v in (s.get("criterion_rationales") or {}).items() if v)
        if s.get("judge_error"):
            rationale = f"judge error: {s['judge_error']}"
        rows.append([step, s.get("group"), s.get("prompt", ""), s.get("completion", ""), s.get("reward"),
                     s.get("advantage"), criteria, rationale or ""])
    return rows


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"policy": {"lora": {"r": 16}}} -> {"policy.lora.r": 16} (lists as JSON text)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v, ensure_ascii=False)
        else:
            out[key] = v
    return out


def check_available(names: Iterable[str]) -> list[str]:
    """The tracker names, validated, each one's package importable; else a one-line MinirftError."""
    out = []
    for name in names:
        if name not in TRACKERS:
            raise MinirftError(f"logging.report_to: unknown tracker {name!r} (expected some of {', '.join(TRACKERS)})")
        if importlib.util.find_spec(MODULES[name]) is None:
            raise MinirftError(f"logging.report_to: {name} is not installed: pip install 'minirft[{name}]'")
        if name not in out:
            out.append(name)
    return out


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Third-party banners and progress lines hidden unless -v."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# ---------------------------------------------------------------------------------- the sinks
class _Sink:
    name = ""

    def __init__(self, run_dir: Path, project: str, state: dict, verbose: bool):
        self.run_dir, self.project, self.state, self.verbose = run_dir, project, state, verbose

    def start(self, record: dict) -> None: ...
    def scalars(self, step: int, values: dict[str, float], time: float) -> None: ...
    def samples(self, step: int, rows: list[list[Any]]) -> None: ...
    def note(self, step: int, kind: str, message: str) -> None: ...
    def finish(self, status: str) -> None: ...


class TensorBoardSink(_Sink):
    name = "tensorboard"

    def start(self, record: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        resumed = record.get("resumed_from")
        # On resume, drop what an earlier process logged past the checkpoint (it is logged again).
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), flush_secs=10,
                                    purge_step=resumed + 1 if resumed else None)
        recipe = json.dumps(record.get("recipe") or {}, indent=1, ensure_ascii=False)
        self.writer.add_text("recipe", "```\n" + recipe + "\n```", 0)

    def scalars(self, step: int, values: dict[str, float], time: float) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step, walltime=time)
        self.writer.flush()

    def samples(self, step: int, rows: list[list[Any]]) -> None:
        def cell(v: Any) -> str:
            text = f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))
            return text.replace("|", "\\|").replace("\n", "<br>")

        lines = ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|" + "---|" * len(SAMPLE_COLUMNS)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        self.writer.add_text("samples", "\n".join(lines), step)

    def note(self, step: int, kind: str, message: str) -> None:
        self.writer.add_text("warnings" if kind == "warning" else "events", f"[{kind}] {message}", step)

    def finish(self, status: str) -> None:
        self.writer.add_text("events", f"run {status}", self.state.get("last_step", 0))
        self.writer.close()


class MlflowSink(_Sink):
    name = "mlflow"

    def start(self, record: dict) -> None:
        from mlflow.tracking import MlflowClient  # mlflow sets up its loggers on import: quieten them after

        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.INFO if self.verbose else logging.WARNING)

        store = self.run_dir / "mlflow"
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store.resolve() / 'mlflow.db'}"
            artifacts = (store / "artifacts").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        exp = self.client.get_experiment_by_name(self.project)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(self.project, artifact_location=artifacts)
        run_id = self.state.get("mlflow_run_id") if record.get("resumed_from") is not None else None
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(exp_id, run_name=record.get("run_name"), tags={"minirft.run_dir": str(self.run_dir)})
            run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k[:250], str(v)[:6000]) for k, v in flatten(record.get("recipe") or {}).items()]
            for lo in range(0, len(params), 100):  # the store's batch limit
                self.client.log_batch(run_id, params=params[lo:lo + 100])
        self.run_id = self.state["mlflow_run_id"] = run_id
        self.warnings: list[str] = []

    def scalars(self, step: int, values: dict[str, float], time: float) -> None:
        from mlflow.entities import Metric

        ms = int(time * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ms, step) for k, v in values.items()])

    def samples(self, step: int, rows: list[list[Any]]) -> None:
        # The layout of mlflow.log_table ("split" orient), without needing pandas to write it.
        self.client.log_dict(self.run_id, {"columns": SAMPLE_COLUMNS, "data": rows}, f"samples/step-{step:06d}.json")

    def note(self, step: int, kind: str, message: str) -> None:
        self.warnings.append(f"step {step} [{kind}] {message}")

    def finish(self, status: str) -> None:
        if self.warnings:
            self.client.log_text(self.run_id, "\n".join(self.warnings) + "\n", "warnings.txt")
        self.client.set_terminated(self.run_id, {"finished": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED"))


class WandbSink(_Sink):
    name = "wandb"

    def start(self, record: dict) -> None:
        if not self.verbose:
            os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        resume = record.get("resumed_from") is not None and self.state.get("wandb_run_id")
        (self.run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        with _quiet(self.verbose):
            self.run = wandb.init(project=self.project, name=record.get("run_name"), dir=str(self.run_dir), mode=mode,
                                  config=record.get("recipe") or {}, id=self.state.get("wandb_run_id") if resume else None,
                                  resume="allow" if resume else None, settings=wandb.Settings(console="off"))
        self.state["wandb_run_id"] = self.run.id
        self.wandb = wandb

    def scalars(self, step: int, values: dict[str, float], time: float) -> None:
        self.run.log(values, step=step)

    def samples(self, step: int, rows: list[list[Any]]) -> None:
        self.run.log({"samples": self.wandb.Table(columns=SAMPLE_COLUMNS, data=rows)}, step=step)

    def finish(self, status: str) -> None:
        with _quiet(self.verbose):
            self.run.finish(exit_code=0 if status == "finished" else 1)


class TrackioSink(_Sink):
    name = "trackio"

    def start(self, record: dict) -> None:
        import trackio

        self.trackio = trackio
        with _quiet(self.verbose):
            trackio.init(project=self.project, name=record.get("run_name"), config=record.get("recipe") or {},
                         resume="allow", auto_log_cpu=False, auto_log_gpu=False, embed=False)

    def scalars(self, step: int, values: dict[str, float], time: float) -> None:
        self.trackio.log(values, step=step)

    def samples(self, step: int, rows: list[list[Any]]) -> None:
        self.trackio.log({"samples": self.trackio.Table(columns=SAMPLE_COLUMNS, data=rows)}, step=step)

    def finish(self, status: str) -> None:
        with _quiet(self.verbose):
            self.trackio.finish()


SINKS = {cls.name: cls for cls in (TensorBoardSink, MlflowSink, WandbSink, TrackioSink)}


# ----------------------------------------------------------------------------------- fan-out
class Trackers:
    """An EventLog listener: turns records into tracker calls. Samples are buffered until the step's
    next non-sample record, so each step's table goes out whole."""

    def __init__(self, names: Iterable[str], run_dir: str | Path, *, project: str = "minirft", verbose: bool = False):
        self.names = check_available(names)
        self.run_dir = Path(run_dir)
        self.state_path = self.run_dir / "trackers.json"
        from minirft.rundir import guard

        for name in ("trackers.json", *self.names):  # nothing written through a link in the run dir
            guard(self.run_dir, self.run_dir / name)
        try:
            state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        except (OSError, ValueError):
            state = None
        if not isinstance(state, dict):  # damaged or foreign: the trackers start new runs
            state = {}
        self.state: dict[str, Any] = state
        self.sinks: list[_Sink] = [SINKS[n](self.run_dir, project, state, verbose) for n in self.names]
        self._pending: list[dict] = []
        self._pending_step = 0
        self._started = False
        self._finished = False

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def _each(self, method: str, *args: Any) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as exc:  # a tracker must never take the run down with it
                self.sinks.remove(sink)
                print(f"warning: tracker {sink.name} failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                      "switched off for this run", file=sys.stderr, flush=True)

    def _flush_samples(self) -> None:
        if self._pending:
            self._each("samples", self._pending_step, sample_table(self._pending_step, self._pending))
            self._pending = []

    def __call__(self, record: dict) -> None:
        kind, step = record.get("type"), int(record.get("step") or 0)
        if kind == "sample":
            if step != self._pending_step:
                self._flush_samples()
            self._pending_step = step
            self._pending.append(record)
            return
        self._flush_samples()
        if kind == "run_start":
            self._each("start", record)
            self._started = True
            self._save_state()
        elif not self._started:
            return
        elif kind == "step":
            self.state["last_step"] = step
            self._each("scalars", step, tracker_metrics(record.get("metrics") or {}), float(record.get("time") or 0))
        elif kind == "event" and record.get("kind") in ("warning", "nan_skip", "judge_error", "resume"):
            if record.get("kind") == "warning" and isinstance(record.get("value"), (int, float)):
                name = f"warnings/{record.get('detector') or 'detector'}"
                self._each("scalars", step, {name: float(record["value"])}, float(record.get("time") or 0))
            self._each("note", step, record["kind"], str(record.get("message", "")))
        elif kind == "run_end":
            self._each("finish", record.get("status") or "failed")
            self._finished = True
            self._save_state()

    def _save_state(self) -> None:
        from minirft.atomic import write_text

        write_text(self.state_path, json.dumps(self.state, indent=1) + "\n")

    def close(self) -> None:
        self._flush_samples()
        if self._started and not self._finished:
            self._each("finish", "stopped")
            self._finished = True


def open_trackers(logging_cfg: Any, run_dir: str | Path, *, verbose: bool = False) -> list[Trackers]:
    """The listeners for a run's EventLog: ``[Trackers(...)]``, or ``[]`` when ``report_to`` is empty.
    A missing package is a MinirftError naming the extra, raised before any model is loaded."""
    names = list(getattr(logging_cfg, "report_to", None) or [])
    if not names:
        return []
    return [Trackers(names, run_dir, project=getattr(logging_cfg, "project", "minirft"), verbose=verbose)]


def replay(run_dir: str | Path, names: Iterable[str], *, project: str = "minirft", verbose: bool = False) -> int:
    """Send a run's whole ``events.jsonl`` to trackers (a finished run, or one trained without them).
    Returns the number of records read."""
    from minirft.events import read_events

    run_dir = Path(run_dir)
    events = run_dir / "events.jsonl"
    if not events.is_file():
        raise MinirftError(f"{run_dir}: not a run dir (no events.jsonl)")
    records = read_events(events)
    # A resumed run has one run_start (and maybe run_end) per process: replay it as one tracker run.
    ends = [i for i, r in enumerate(records) if r.get("type") == "run_end"]
    starts = [i for i, r in enumerate(records) if r.get("type") == "run_start"]
    drop = set(starts[1:]) | set(ends[:-1])
    records = [r for i, r in enumerate(records) if i not in drop]
    trackers = Trackers(names, run_dir, project=project, verbose=verbose)
    try:
        for record in records:
            trackers(record)
    finally:
        trackers.close()
    return len(records)
