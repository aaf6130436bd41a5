"""minirft's judge as a TRL reward function: ``judge_reward("recipe.yaml")``.

TRL calls a reward function as ``fn(prompts=..., completions=..., completion_ids=..., **columns)`` with
one prompt and one completion per sample (conversational datasets give lists of messages), the
dataset's other columns by name, and — TRL ≥ 1.0 — ``log_extra(column, values)`` and
``log_metric(name, value)``. It wants one float (or ``None``: not scored) per completion.

What this module adds over a hand-written judge call:

- **batching**: every call's completions go to the judge in one ``score_groups`` call, grouped by
  prompt, so the shared-prefix engine decodes the rubric header once and each prompt once per call;
- **per-criterion rewards** (``per_criterion=True``): one function per criterion, named after it, so
  TRL logs ``rewards/<criterion>/mean``; they share one judge call per batch (a small memo);
- **rationales** go to TRL's completions table through ``log_extra("judge_rationale", ...)``;
- **preference mode** needs a prompt's whole group of completions. Under several processes TRL hands
  each process a contiguous slice of the global batch, which can cut a group in two; the function
  then gathers every process's prompts and completions (accelerate's ``gather_object``), judges the
  whole groups its own slice touches and returns its slice. With ``gather=False`` it refuses instead.
  A batch that does not consist of whole groups of ``group_size`` is an error, never scored as is.

``async_=True`` returns coroutine functions (TRL runs async reward functions concurrently); the
judge runs in a worker thread, one call at a time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from minirft.data import PromptRow, parse_messages
from minirft.errors import MinirftError
from minirft.judge.base import Judge, Score
from minirft.recipe import Recipe

# keyword arguments TRL passes that are not dataset columns
TRL_KWARGS = ("completion_ids", "trainer_state", "log_extra", "log_metric", "environments")
RATIONALE_COLUMN = "judge_rationale"


def text_of(item: Any) -> str:
    """A TRL prompt or completion as text: a string, or the content of the last message of a chat."""
    if isinstance(item, str):
        return item
    if isinstance(item, (list, tuple)) and item and isinstance(item[-1], dict):
        return str(item[-1].get("content", ""))
    return str(item)


def prompt_row(prompt: Any, columns: dict[str, Any]) -> PromptRow:
    """A TRL prompt (text or a chat) plus its row's columns as minirft's PromptRow."""
    if isinstance(prompt, str):
        messages: tuple[dict, ...] = ({"role": "user", "content": prompt},)
    else:
        messages = parse_messages([{"role": m["role"], "content": text_of([m])} for m in prompt], "TRL prompt")
    ref = columns.get("reference")
    return PromptRow(messages, None if ref is None else str(ref), dict(columns))


def dataset_columns(kwargs: dict[str, Any]) -> dict[str, list]:
    return {k: v for k, v in kwargs.items() if k not in TRL_KWARGS and isinstance(v, (list, tuple))}


def _key(row: PromptRow) -> tuple:
    return (tuple((m["role"], m["content"]) for m in row.messages), row.reference)


def consecutive_groups(rows: Sequence[PromptRow]) -> list[list[int]]:
    """Indices of consecutive samples with the same prompt (TRL repeats a prompt G times in a row)."""
    groups: list[list[int]] = []
    for i, row in enumerate(rows):
        if groups and _key(rows[groups[-1][0]]) == _key(row):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _world() -> tuple[int, int]:
    """(process index, number of processes) of the running accelerate job (TRL's), else (0, 1)."""
    try:
        from accelerate.state import PartialState

        if PartialState._shared_state:  # initialised by TRL's Accelerator; never created here
            state = PartialState()
            return state.process_index, state.num_processes
    except ImportError:  # pragma: no cover - accelerate is a dependency
        pass
    return 0, 1


def _gather(items: list) -> list:
    """Every process's ``items``, concatenated in rank order (a collective: every process calls it)."""
    from accelerate.utils import gather_object

    return gather_object(list(items))


class JudgeReward:
    """The shared state behind one or several reward functions: the judge, the memo, the listeners."""

    def __init__(self, recipe: Recipe, *, judge: Judge | None = None, group_size: int | None = None, gather: bool = True,
                 rationales: int | None = None) -> None:
        if recipe.judge is None:
            raise MinirftError(f"{recipe.source or '<recipe>'}: judge_reward needs a recipe with a `judge` section")
        self.recipe = recipe
        self.cfg = recipe.judge
        self._judge = judge
        self.group_size = group_size or recipe.generation.group_size
        self.gather = gather
        # samples per call that get a rationale when judge.rationales is "shown" (as minirft's trainer logs)
        self.rationales = recipe.logging.samples_per_step if rationales is None else rationales
        self._lock = threading.Lock()
        self._memo: tuple[tuple, list[Score]] | None = None
        self.listeners: list[Callable[[list[PromptRow], list[str], list[Score], float], None]] = []
        self.calls = 0

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            from minirft.judge import build_judge

            self._judge = build_judge(self.cfg)
        return self._judge

    @property
    def built(self) -> Judge | None:
        """The judge if it exists yet (never builds one)."""
        return self._judge

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()

    # ------------------------------------------------------------------------------ scoring
    def scores(self, prompts: Sequence[Any], completions: Sequence[Any], kwargs: dict[str, Any]) -> list[Score]:
        """One Score per completion (memoised for the last batch, shared by per-criterion functions)."""
        texts = [text_of(c) for c in completions]
        key = (tuple(map(repr, prompts)), tuple(texts))
        with self._lock:
            if self._memo is not None and self._memo[0] == key:
                return self._memo[1]
            columns = dataset_columns(kwargs)
            rows = [prompt_row(p, {k: v[i] for k, v in columns.items()}) for i, p in enumerate(prompts)]
            t0 = time.perf_counter()
            if self.cfg.mode == "preference":
                scores = self._preference(rows, texts)
            else:
                scores = self._rubric(rows, texts)
            seconds = time.perf_counter() - t0
            self._memo = (key, scores)
            self.calls += 1
            self._report(scores, seconds, kwargs)
            for listener in self.listeners:
                listener(rows, texts, scores, seconds)
            return scores

    def _flags(self, groups: list[list[int]]) -> list[list[bool]]:
        policy = self.cfg.rationales
        flags = [[policy == "all"] * len(g) for g in groups]
        if policy == "shown":  # one per group in turn, like the trainer's logged samples
            k = 0
            while k < self.rationales and k < sum(map(len, groups)):
                g, j = k % len(groups), k // len(groups)
                if j < len(groups[g]):
                    flags[g][j] = True
                k += 1
        return flags

    def _rubric(self, rows: list[PromptRow], texts: list[str]) -> list[Score]:
        groups = consecutive_groups(rows)
        out: list[Score | None] = [None] * len(texts)
        scored = self.judge.score_groups([rows[g[0]] for g in groups], [[texts[i] for i in g] for g in groups],
                                         self._flags(groups))
        for g, ss in zip(groups, scored):
            for i, s in zip(g, ss):
                out[i] = s
        return out  # type: ignore[return-value]

    def _preference(self, rows: list[PromptRow], texts: list[str]) -> list[Score]:
        rank, world = _world()
        G = self.group_size
        offset = 0
        all_rows, all_texts = rows, texts
        if world > 1:
            if not self.gather:
                raise MinirftError(
                    f"judge.mode: preference under {world} processes: a prompt's group of {G} completions can be "
                    "split across processes, and judge_reward(gather=False) does not gather them; use gather=True "
                    "or one process")
            sizes = _gather([len(rows)])
            offset = sum(sizes[:rank])
            all_rows, all_texts = _gather(rows), _gather(texts)
        n = len(all_rows)
        if n % G:
            raise MinirftError(f"judge.mode: preference needs whole groups: {n} completions in the batch is not a "
                               f"multiple of the group size {G} (pass group_size= to judge_reward)")
        groups = [list(range(s, s + G)) for s in range(0, n, G)]
        for g in groups:
            if len({_key(all_rows[i]) for i in g}) != 1:
                raise MinirftError(f"judge.mode: preference needs whole groups: samples {g[0]}..{g[-1]} do not share "
                                   f"one prompt (is the trainer's num_generations {G}?)")
        mine = [g for g in groups if g[0] < offset + len(rows) and g[-1] >= offset]
        scored = self.judge.score_groups([all_rows[g[0]] for g in mine], [[all_texts[i] for i in g] for g in mine],
                                         self._flags(mine))
        out: list[Score | None] = [None] * len(rows)
        for g, ss in zip(mine, scored):
            for i, s in zip(g, ss):
                if offset <= i < offset + len(rows):
                    out[i - offset] = s
        return out  # type: ignore[return-value]

    def _report(self, scores: list[Score], seconds: float, kwargs: dict[str, Any]) -> None:
        log_extra, log_metric = kwargs.get("log_extra"), kwargs.get("log_metric")
        if callable(log_extra) and self.cfg.rationales != "none":
            log_extra(RATIONALE_COLUMN, [s.rationale or "" for s in scores])
        if callable(log_metric):
            log_metric("judge/seconds", seconds)
            log_metric("judge/errors", float(sum(s.reward is None for s in scores)))

    # ------------------------------------------------------------------------------ the callables
    def function(self, name: str, pick: Callable[[Score], float | None], async_: bool) -> Callable:
        def reward(prompts, completions, **kwargs) -> list[float | None]:
            return [pick(s) for s in self.scores(prompts, completions, kwargs)]

        async def areward(prompts, completions, **kwargs) -> list[float | None]:
            return await asyncio.to_thread(reward, prompts, completions, **kwargs)

        fn = areward if async_ else reward
        fn.__name__ = fn.__qualname__ = name  # TRL logs rewards/<__name__>/mean
        fn.judge = self  # type: ignore[attr-defined]
        return fn


def judge_reward(recipe: str | Path | Recipe, *, per_criterion: bool = False, overrides: Sequence[str] = (),
                 group_size: int | None = None, gather: bool = True, async_: bool = False,
                 judge: Judge | None = None) -> Callable | list[Callable]:
    """A TRL reward function (or one per criterion) built from a recipe's judge.

    ``recipe``: a recipe file, the name of a shipped recipe, or a loaded :class:`Recipe`;
    ``overrides``: dotted ``key=value`` overrides as on the command line; ``group_size``: TRL's
    ``num_generations`` (default: the recipe's ``generation.group_size``; preference mode checks it);
    ``judge``: an already built judge to share (default: built from the recipe on the first call).

    Example::

        from trl import GRPOConfig, GRPOTrainer
        from minirft.integrations.trl import judge_reward

        trainer = GRPOTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct",
                              reward_funcs=judge_reward("recipes/polite.yaml", per_criterion=True),
                              args=GRPOConfig(num_generations=4), train_dataset=dataset)
    """
    if not isinstance(recipe, Recipe):
        from minirft.recipe import find_recipe, load_recipe

        recipe = load_recipe(find_recipe(str(recipe)), list(overrides))
    state = JudgeReward(recipe, judge=judge, group_size=group_size, gather=gather)
    if not per_criterion:
        return state.function("judge", lambda s: s.reward, async_)
    if state.cfg.mode != "rubric":
        raise MinirftError("judge_reward(per_criterion=True) needs judge.mode: rubric (preference has no criteria)")

    def picker(name: str) -> Callable[[Score], float | None]:
        return lambda s: None if s.reward is None else s.criteria.get(name)

    return [state.function(c.name, picker(c.name), async_) for c in state.cfg.criteria]
