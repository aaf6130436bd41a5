"""Rule-based rewards: the recipe's ``rewards`` list turned into plain TRL-style callables.

Every reward is ``fn(prompts, completions, **columns) -> list[float | None]``: one value per
completion, ``None`` meaning "not applicable / could not score" (the sample simply gets no
contribution from this reward). ``columns`` are the prompt rows' extra fields by name, one value per
completion (``reference`` among them), which is exactly what a user's own ``python`` reward receives.

Why plain callables: a rule check and a user's function are then the same kind of thing, testable
without a model, and the trainer only has to combine lists of numbers with the recipe's weights.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from minirft.data import PromptRow
from minirft.errors import MinirftError
from minirft.recipe import ExactMatchReward, LengthReward, OverlongReward, PythonReward, RegexReward

RewardFn = Callable[..., list]


@dataclass(frozen=True)
class NamedReward:
    name: str
    weight: float
    fn: RewardFn
    source: str = ""  # where it was configured (``rewards.2`` / a python function's dotted path), for errors


# A regex reward (or an exact_match `extract`) gets this long per completion: a pattern with catastrophic
# backtracking (``(a+)+$`` on a long run of a's) stops the run with an error naming the reward instead of
# hanging the step. Sane patterns on a completion take microseconds.
REGEX_TIMEOUT_S = 1.0


def _compile(pattern: str) -> Any:
    """The pattern compiled by the ``regex`` package (a dependency of transformers; ``re``'s syntax,
    plus a match timeout), else by ``re`` (no timeout)."""
    try:
        import regex as regex_mod
    except ImportError:  # pragma: no cover - transformers requires it
        return re.compile(pattern, re.DOTALL)
    return regex_mod.compile(pattern, regex_mod.DOTALL | regex_mod.VERSION0)


def _search(compiled: Any, text: str, what: str) -> Any:
    if isinstance(compiled, re.Pattern):
        return compiled.search(text)
    try:
        return compiled.search(text, timeout=REGEX_TIMEOUT_S)
    except TimeoutError:
        raise MinirftError(f"{what}: the pattern took more than {REGEX_TIMEOUT_S:g} s on one {len(text)}-character "
                           "completion (catastrophic backtracking, e.g. nested repeats like (a+)+); "
                           "simplify the pattern") from None


def _normalise(text: str) -> str:
    """Compare answers loosely: case, surrounding spaces/punctuation, thousands separators, '7.0' == '7'."""
    t = text.strip().strip(".!?,;:").strip().lower().replace(",", "")
    try:
        value = float(t)
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return repr(value)
    except ValueError:
        return t


def exact_match(cfg: ExactMatchReward) -> RewardFn:
    pattern = _compile(cfg.extract) if cfg.extract else None
    what = f"exact_match reward '{cfg.name}': extract"

    def reward(prompts: Sequence[str], completions: Sequence[str], reference: Sequence[Any] | None = None,
               **_: Any) -> list[float | None]:
        if reference is None:
            return [None] * len(completions)
        out: list[float | None] = []
        for completion, ref in zip(completions, reference):
            if ref is None:
                out.append(None)
                continue
            answer: str | None = completion
            if pattern is not None:
                m = _search(pattern, completion, what)
                answer = (m.group(1) if m.groups() else m.group(0)) if m else None
            out.append(float(answer is not None and _normalise(answer) == _normalise(str(ref))))
        return out

    return reward


def regex(cfg: RegexReward) -> RewardFn:
    try:
        pattern = _compile(cfg.pattern)
    except Exception as exc:  # re.error / regex.error
        raise MinirftError(f"rewards: regex '{cfg.name}': invalid pattern {cfg.pattern!r} ({exc})") from None
    what = f"regex reward '{cfg.name}'"

    def reward(prompts: Sequence[str], completions: Sequence[str], **_: Any) -> list[float | None]:
        return [float(bool(_search(pattern, c, what)) != cfg.negate) for c in completions]

    return reward


def length(cfg: LengthReward) -> RewardFn:
    def reward(prompts: Sequence[str], completions: Sequence[str], **_: Any) -> list[float | None]:
        out = []
        for c in completions:
            n = len(c.strip())
            miss = max(cfg.min_chars - n, n - cfg.max_chars, 0)
            out.append(max(0.0, 1.0 - miss / cfg.slack))
        return out

    return reward


def overlong(cfg: OverlongReward) -> RewardFn:
    """DAPO's soft overlong punishment on the completion's token count (the ``completion_tokens``
    column the trainer passes; None where it is absent, e.g. in ``minirft eval``)."""
    top = cfg.max_tokens
    cache = cfg.cache_tokens if cfg.cache_tokens is not None else max(1, (top or 4) // 4)

    def reward(prompts: Sequence[str], completions: Sequence[str], completion_tokens: Sequence[int] | None = None,
               **_: Any) -> list[float | None]:
        if completion_tokens is None or top is None:
            return [None] * len(completions)
        out: list[float | None] = []
        for n in completion_tokens:
            if n is None:
                out.append(None)
            elif n <= top - cache:
                out.append(0.0)
            elif n <= top:
                out.append((top - cache - n) / cache)
            else:
                out.append(-1.0)
        return out

    return reward


def _top_level_names(source: str) -> set[str] | None:
    """Names a module's source defines at top level (None when it may define others dynamically:
    ``from x import *`` or a module ``__getattr__``)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> bool:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name == "__getattr__":
                    return False
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name == "*":
                        return False
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                blocks = [getattr(node, f, []) for f in ("body", "orelse", "finalbody")]
                blocks += [h.body for h in getattr(node, "handlers", [])]
                if not all(visit(b) for b in blocks):
                    return False
        return True

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None  # the import will report it
    return names if visit(tree.body) else None


def load_callable(path: str) -> RewardFn:
    """``package.module:function`` or ``package.module.function`` → the function.

    Importing runs the module's code (a recipe is code you trust). Before that, the module must exist
    and, when its source can be read, define the name at top level: a typo never runs a module."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise MinirftError(f"python function '{path}': no module named '{module_name}' "
                           "(is it on PYTHONPATH, or installed in this environment?)")
    origin = spec.origin if spec.has_location else None
    if origin and origin.endswith(".py"):
        try:
            names = _top_level_names(Path(origin).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            names = None
        first = attr.split(".")[0]
        if names is not None and first not in names:
            raise MinirftError(f"python function '{path}': {origin} defines no '{first}' (the module was not imported)")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise MinirftError(f"python function '{path}': cannot import module '{module_name}' ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise MinirftError(f"python function '{path}': importing '{module_name}' failed "
                           f"({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MinirftError(f"python function '{path}': module '{module_name}' has no '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise MinirftError(f"python function '{path}' is not callable")
    return obj


def build_rewards(configs: Sequence[Any], key: str = "rewards") -> list[NamedReward]:
    """The recipe's ``rewards`` list as named, weighted callables (names must be unique); errors name
    ``<key>.<i>``."""
    out: list[NamedReward] = []
    for i, cfg in enumerate(configs):
        if isinstance(cfg, ExactMatchReward):
            fn = exact_match(cfg)
        elif isinstance(cfg, RegexReward):
            fn = regex(cfg)
        elif isinstance(cfg, LengthReward):
            fn = length(cfg)
        elif isinstance(cfg, OverlongReward):
            fn = overlong(cfg)
        elif isinstance(cfg, PythonReward):
            try:
                fn = load_callable(cfg.function)
            except MinirftError as exc:
                raise MinirftError(f"{key}.{i}.function: {exc}") from None
            source = f"{key}.{i} ({cfg.function})"
        else:  # pragma: no cover - the schema only admits the types above
            raise MinirftError(f"{key}.{i}: unknown reward type {type(cfg).__name__}")
        if not isinstance(cfg, PythonReward):
            source = f"{key}.{i}"
        name = cfg.name or getattr(fn, "__name__", f"reward{i}")
        if name == "judge" or any(r.name == name for r in out):
            raise MinirftError(f"{key}.{i}: reward name '{name}' is used twice (or is the reserved 'judge')")
        out.append(NamedReward(name, cfg.weight, fn, source))
    return out


def call_reward(reward: NamedReward, prompts: Sequence[str], completions: Sequence[str],
                columns: dict[str, list]) -> list[float | None]:
    """Run one reward; check its answer's length and turn NaN/inf into None (not applicable).

    A reward that raises, or answers with anything but one number (or None) per completion, is a
    MinirftError naming the reward (and where it was configured): the run stops with that one line."""
    who = f"reward '{reward.name}'" + (f" ({reward.source})" if reward.source else "")
    try:
        values = reward.fn(list(prompts), list(completions), **columns)
    except MinirftError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's function failed: say which one
        where = _raised_at(exc)
        raise MinirftError(f"{who} raised {type(exc).__name__}: {str(exc)[:300]}{where}") from None
    try:
        n = len(values)
    except TypeError:
        raise MinirftError(f"{who} returned {type(values).__name__}; expected a list of "
                           f"{len(completions)} numbers (or None)") from None
    if n != len(completions):
        raise MinirftError(f"{who} returned {n} values for {len(completions)} completions")
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, (str, bytes)) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
            raise MinirftError(f"{who} returned {type(v).__name__} {str(v)[:40]!r} at position {i}; expected a "
                               "number (or None)")
        try:
            v = float(v)
        except (TypeError, ValueError, OverflowError):
            raise MinirftError(f"{who} returned {type(v).__name__} at position {i}; expected a number (or None)") from None
        out.append(v if math.isfinite(v) else None)
    return out


def _raised_at(exc: BaseException) -> str:
    """`` at file:line`` of the innermost frame of the traceback (the user's code, usually)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    return f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


def reward_columns(rows: Sequence[PromptRow], repeat: int) -> dict[str, list]:
    """The data columns reward functions receive by name (``reference`` and every other column of a row),
    each row's value repeated ``repeat`` times (one per completion of its group)."""
    names = {k for r in rows for k in r.columns}
    cols = {k: [r.columns.get(k) for r in rows for _ in range(repeat)] for k in names}
    cols["reference"] = [r.reference for r in rows for _ in range(repeat)]
    return cols
