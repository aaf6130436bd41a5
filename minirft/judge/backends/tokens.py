"""What the in-process backends share about text: a bounded tokenization cache and stop strings."""

from __future__ import annotations

from typing import Callable, Sequence


class TokenCache:
    """Memoised ``tokenize(text, bos) -> ids``: the header and row segments recur every step."""

    def __init__(self, tokenize: Callable[[str, bool], Sequence[int]], limit: int = 20000) -> None:
        self._tokenize = tokenize
        self._limit = limit
        self._cache: dict[tuple[str, bool], tuple[int, ...]] = {}

    def __call__(self, text: str, bos: bool = False) -> tuple[int, ...]:
        key = (text, bos)
        if key not in self._cache:
            if len(self._cache) > self._limit:
                self._cache.clear()
            self._cache[key] = tuple(self._tokenize(text, bos))
        return self._cache[key]


def reached_stop(text: str, stops: Sequence[str]) -> bool:
    """True once generated ``text`` (leading whitespace ignored) contains a stop string."""
    text = text.lstrip()
    return any(s in text for s in stops)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` stripped and cut at the first occurrence of any stop string; what a stop has before its
    trailing whitespace is kept (the period of the sentence end ". ", nothing of "\n")."""
    text = text.strip()
    for s in stops:
        if s in text:
            text = (text.split(s)[0] + s.rstrip()).strip()
    return text
