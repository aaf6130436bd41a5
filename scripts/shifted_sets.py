"""Write the shipped recipes' shifted held-out sets (recipes/data/*-shifted.jsonl): prompts drawn unlike
the training prompts, to see whether a gain generalises. Deterministic: rerunning it rewrites the same
files (tests/test_heldout.py checks the committed files against it).

- arithmetic-shifted.jsonl (arithmetic, arithmetic-judge): larger numbers in the recipe's phrasing, other
  phrasings, and short word problems; each row's ``reference`` is computed here, so exact match is a rule.
- howto-shifted.jsonl (howto, howto-pairs): how-to tasks from other fields (tools, computers, money, the
  body, paperwork), in other wordings ("Walk me through…", "What are the steps to…").
- formal-shifted.jsonl (formal): kinds of prompts other than how-to questions: messages to write,
  explanations, opinions, summaries, short stories, chat.
- everyday-questions-shifted.jsonl (polite, preference): other topics, in a casual register.

Usage: python scripts/shifted_sets.py [OUT_DIR]   (default: recipes/data)
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kemi", "Luis", "Mia",
         "Noor", "Omar", "Priya"]
ITEMS = ["apples", "stamps", "marbles", "pencils", "cookies", "stickers", "books", "coins"]


def arithmetic(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(16):  # the recipe's phrasing, numbers 20-99 (training: 1-18)
        a, b = rng.randint(20, 99), rng.randint(20, 99)
        op = rng.choice("+-")
        if op == "-" and b > a:
            a, b = b, a
        rows.append({"prompt": f"What is {a} {op} {b}? Answer with the number.",
                     "reference": str(a + b if op == "+" else a - b), "kind": "larger_numbers"})
    phrasings = [
        ("Compute {a} + {b}. Reply with just the number.", "+"),
        ("Compute {a} - {b}. Reply with just the number.", "-"),
        ("Add {a} and {b}. Give only the result.", "+"),
        ("Subtract {b} from {a}. Give only the result.", "-"),
        ("{a} plus {b} equals what? Just the number, please.", "+"),
        ("What do you get when you take {b} away from {a}? Answer with a number.", "-"),
        ("Find the sum of {a} and {b}.", "+"),
        ("Find the difference between {a} and {b}.", "-"),
    ]
    for i in range(16):  # other phrasings, numbers 2-40
        text, op = phrasings[i % len(phrasings)]
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        if op == "-" and b > a:
            a, b = b, a
        rows.append({"prompt": text.format(a=a, b=b), "reference": str(a + b if op == "+" else a - b),
                     "kind": "other_phrasing"})
    for i in range(16):  # short word problems, numbers 2-30
        name, item = NAMES[i], ITEMS[i % len(ITEMS)]
        a, b = rng.randint(5, 30), rng.randint(2, 20)
        if i % 2 == 0:
            text, ref = (f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now? "
                         "Answer with the number."), a + b
        else:
            a, b = max(a, b), min(a, b)
            text, ref = (f"{name} had {a} {item} and gave {b} away. How many {item} are left? "
                         "Answer with the number."), a - b
        rows.append({"prompt": text, "reference": str(ref), "kind": "word_problem"})
    return rows


HOWTO = [
    "Walk me through changing a light bulb in a ceiling lamp.",
    "What are the steps to reset a home Wi-Fi router?",
    "Explain how to unclog a bathroom sink without chemicals.",
    "Walk me through opening a savings account.",
    "What are the steps to renew a passport?",
    "Explain how to tie a tie.",
    "Walk me through making a simple website with one page.",
    "What are the steps to jump-start a car battery?",
    "Explain how to sharpen a kitchen knife.",
    "Walk me through sewing a button back on a shirt.",
    "What are the steps to file a lost-luggage claim at an airport?",
    "Explain how to install a program on a Linux computer.",
    "Walk me through doing a plank correctly.",
    "What are the steps to make a paper airplane?",
    "Explain how to read a nutrition label.",
    "Walk me through setting up a fish tank.",
    "What are the steps to patch a small hole in drywall?",
    "Explain how to take a screenshot on a laptop.",
    "Walk me through brewing coffee with a French press.",
    "What are the steps to write a simple will?",
    "Explain how to check a car's tyre pressure.",
    "Walk me through planting a tree.",
    "What are the steps to prepare a short presentation?",
    "Explain how to descale a kettle.",
    "Walk me through moving files to a USB stick.",
    "What are the steps to do a basic first-aid check on someone who fainted?",
    "Explain how to fold a fitted sheet.",
    "Walk me through returning an item bought online.",
    "What are the steps to make bread dough by hand?",
    "Explain how to set up two-factor authentication on an account.",
    "Walk me through painting a small room.",
    "What are the steps to pack a suitcase efficiently?",
]

FORMAL = [
    "Write a short message to my landlord saying the heater is broken.",
    "Write an email to a colleague asking to move our meeting to Friday.",
    "Write a note to my neighbour about their dog barking at night.",
    "Reply to a customer who says their order arrived late.",
    "Write a two-sentence thank-you message to a teacher.",
    "Write a short cover note to go with my job application.",
    "Explain what inflation is.",
    "Explain why the moon has phases.",
    "Explain what a password manager does.",
    "Explain how a bill becomes a law, in general terms.",
    "Explain the difference between a virus and a bacterium.",
    "Explain what compound interest means.",
    "What do you think about working from home?",
    "Is it better to rent or to buy a home?",
    "Should children have homework?",
    "Which is better for a city, trams or buses?",
    "Is social media good for teenagers?",
    "Do you think robots will replace teachers?",
    "Summarise the story of Cinderella in three sentences.",
    "Summarise why people recycle, in two sentences.",
    "Summarise the plot of a detective story you make up, in three sentences.",
    "Tell me a very short story about a lost cat.",
    "Describe a rainy morning in a small town.",
    "Describe your ideal weekend.",
    "hey, what's up?",
    "I'm bored. Any ideas?",
    "lol my printer just ate my homework",
    "Can you cheer me up? I had a bad day.",
    "Tell me a fun fact about octopuses.",
    "Give me three names for a bakery.",
    "What's the weather usually like in Iceland?",
    "Pretend you are a tour guide and welcome me to Rome.",
]

EVERYDAY = [
    "ok so why do onions make u cry lol",
    "whats the deal with daylight saving time anyway",
    "my plants keep dying, what am i doing wrong??",
    "is it weird to eat cereal for dinner",
    "how do magnets even work",
    "can dogs actually see colours?",
    "why does my phone battery die so fast",
    "whats a good board game for 2 people",
    "do fish sleep??",
    "why do i get hiccups",
    "how come the ocean is salty",
    "best way to not be nervous on a first date?",
    "is it bad to crack your knuckles",
    "why is my cat knocking stuff off the table",
    "what even is a black hole",
    "how do planes stay up, seriously",
    "any tips for a long road trip with kids",
    "why do we yawn",
    "how do i stop procrastinating lol",
    "is coffee bad for u",
    "what should i name my new goldfish",
    "how are rainbows round?",
    "why do leaves change colour in autumn",
    "whats the point of taxes",
    "how do bees make honey",
    "can u explain bitcoin like im 10",
    "why is it called a hamburger if there is no ham",
    "my roommate never does the dishes, what do i do",
    "how far away is the moon",
    "do plants feel anything",
    "why do old books smell nice",
    "is it ok to nap at work",
]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {path} ({len(rows)} rows)")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write(out / "arithmetic-shifted.jsonl", arithmetic(random.Random(27)))
    write(out / "howto-shifted.jsonl", [{"prompt": p} for p in HOWTO])
    write(out / "formal-shifted.jsonl", [{"prompt": p} for p in FORMAL])
    write(out / "everyday-questions-shifted.jsonl", [{"prompt": p} for p in EVERYDAY])


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "recipes" / "data")
