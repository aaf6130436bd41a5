"""Write recipes/data/arithmetic-broad.jsonl, the training prompts of recipes/arithmetic-judge.yaml: sums and
differences in more numbers and wordings than recipes/data/arithmetic.jsonl (numbers 1-18, one phrasing), so
that the judge's reward is earned on the number across forms rather than on one answer format.
Deterministic: rerunning it rewrites the same file (tests/test_heldout.py checks the committed file against it).

Four kinds, 48 rows each (the ``kind`` column):
- small_numbers: the recipe's phrasing ("What is a + b? Answer with the number."), numbers 1-20;
- larger_numbers: the same phrasing, numbers 20-99;
- phrasing: eight wordings of its own ("How much is a plus b?", "Calculate a - b.", ...), numbers 2-60;
- word_problem: four templates with names and items of their own, numbers 2-40.

The shifted held-out set (scripts/shifted_sets.py) has larger numbers, other phrasings and word problems too,
but in other wordings, names and items (apart from the recipe's own phrasing for larger numbers), and no
prompt of this file is in it or in recipes/data/arithmetic-heldout.jsonl: rows that would be are drawn again.
Each row's ``reference`` is computed here.

Usage: python scripts/arithmetic_train.py [OUT_DIR]   (default: recipes/data)
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

NAMES = ["Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yusuf", "Zoe", "Aki", "Bea", "Carlos"]
ITEMS = ["shells", "cards", "eggs", "balloons", "buttons", "beads", "candles", "toy cars"]
PHRASINGS = [  # (text, op); none of them is a wording of the shifted set
    ("How much is {a} plus {b}? Answer with the number.", "+"),
    ("How much is {a} minus {b}? Answer with the number.", "-"),
    ("Calculate {a} + {b}. Answer with the number only.", "+"),
    ("Calculate {a} - {b}. Answer with the number only.", "-"),
    ("What is the total of {a} and {b}? Answer with the number.", "+"),
    ("Take {b} from {a}. What is left? Answer with the number.", "-"),
    ("{a} + {b} = ? Answer with the number.", "+"),
    ("{a} - {b} = ? Answer with the number.", "-"),
]
PROBLEMS = [  # (text, op)
    ("There are {a} {item} in a box. {name} puts in {b} more. How many {item} are in the box now? "
     "Answer with the number.", "+"),
    ("A shelf holds {a} {item}. {name} takes {b} of them. How many {item} are still on the shelf? "
     "Answer with the number.", "-"),
    ("{name} bought {a} {item} on Monday and {b} on Tuesday. How many {item} did {name} buy? "
     "Answer with the number.", "+"),
    ("{name} collected {a} {item} and lost {b}. How many {item} does {name} still have? "
     "Answer with the number.", "-"),
]


def _pair(rng: random.Random, lo: int, hi: int, op: str) -> tuple[int, int, int]:
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if op == "-" and b > a:
        a, b = b, a
    return a, b, (a + b if op == "+" else a - b)


def arithmetic_broad(rng: random.Random, taken: set[str]) -> list[dict]:
    """192 rows, no prompt in ``taken`` (the held-out and shifted prompts) and none twice."""
    rows: list[dict] = []

    def add(make) -> None:
        while True:
            prompt, ref, kind = make()
            if prompt not in taken:
                taken.add(prompt)
                rows.append({"prompt": prompt, "reference": str(ref), "kind": kind})
                return

    for lo, hi, kind in ((1, 20, "small_numbers"), (20, 99, "larger_numbers")):
        for _ in range(48):
            def make(lo=lo, hi=hi, kind=kind):
                a, b, ref = _pair(rng, lo, hi, rng.choice("+-"))
                op = "+" if ref == a + b else "-"
                return f"What is {a} {op} {b}? Answer with the number.", ref, kind
            add(make)
    for i in range(48):
        def make(i=i):
            text, op = PHRASINGS[i % len(PHRASINGS)]
            a, b, ref = _pair(rng, 2, 60, op)
            return text.format(a=a, b=b), ref, "phrasing"
        add(make)
    for i in range(48):
        def make(i=i):
            text, op = PROBLEMS[i % len(PROBLEMS)]
            a, b, ref = _pair(rng, 2, 40, op)
            if a == b:
                a += 1
                ref = a + b if op == "+" else a - b
            name, item = rng.choice(NAMES), rng.choice(ITEMS)
            return text.format(a=a, b=b, name=name, item=item), ref, "word_problem"
        add(make)
    return rows


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = Path(__file__).resolve().parent.parent / "recipes" / "data"
    taken = {json.loads(line)["prompt"] for name in ("arithmetic-heldout.jsonl", "arithmetic-shifted.jsonl")
             for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()}
    rows = arithmetic_broad(random.Random(4), taken)
    path = out / "arithmetic-broad.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {path} ({len(rows)} rows)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "recipes" / "data")
