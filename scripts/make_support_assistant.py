"""Make the support benchmark's assistant: the help desk of a fictional product (the Halden Aria
smart kettle) with a fact table and a house style, where exact match cannot judge.

    .venv/bin/python scripts/make_support_assistant.py          # writes bench/data/support/

Every answer is in the house style: a greeting, one sentence with the fact, a sign-off, each
worded several ways (greetings and sign-offs drawn from fixed lists, the fact's sentence from
its own three wordings, each once among the examples). Every fact has five question wordings; a seeded shuffle gives three to the
examples and the other two to the held-out pool, so no held-out question is among the
examples. Deterministic: the same seed writes the same bytes.

Files (committed): `assistant.json` (name, instructions, k, the settings it is created with),
`facts.json` (the fact table), `examples.jsonl` (the product's import format: input/output
lines), `held_out.jsonl` (OpenAI chat lines with the fact's key: the chats the gate is judged
on).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "data" / "support"
SEED = 11

PRODUCT = "Halden Aria"
INSTRUCTIONS = (
    "You are the support assistant of the Halden Aria smart kettle. Answer in the house style: "
    "a short greeting, then one sentence with the fact from Halden's fact sheet, then a "
    "sign-off from the Halden team."
)
GREETINGS = (
    "Hi there!",
    "Hello!",
    "Hi, thanks for reaching out!",
    "Hello, and thanks for asking!",
)
SIGN_OFFS = (
    "Happy brewing! The Halden team",
    "Cheers, Halden support",
    "Warm regards, the Halden team",
    "Anything else, just ask. Halden support",
)
# Three of a fact's five questions come from these, on its topic.
QUESTION_TEMPLATES = (
    "Can you tell me about the Aria's {topic}?",
    "I have a question about the {topic} of my Aria.",
    "What should I know about the {topic}?",
)
EXAMPLE_QUESTIONS = 3  # per fact; the other two are held out
HELD_OUT_ITEMS = 40  # one per fact, then second questions of facts drawn by the seed


@dataclass(frozen=True)
class Fact:
    key: str
    topic: str  # a noun phrase for the question templates
    value: str  # what every answer about it must contain
    questions: tuple[str, str]  # worded by hand
    sentences: tuple[str, str, str]  # the fact in one sentence, three ways


FACTS = (
    Fact("warranty", "warranty", "2 years",
         ("How long is the warranty on the kettle?", "Is my Aria still under guarantee?"),
         ("The Aria comes with a 2 years warranty from the date of purchase.",
          "Your kettle is covered by our warranty for 2 years.",
          "Every Aria carries a warranty of 2 years.")),
    Fact("capacity", "capacity", "1.7 litres",
         ("How much water does the Aria hold?", "What's the maximum fill of the kettle?"),
         ("The Aria holds up to 1.7 litres of water.",
          "You can fill the kettle with 1.7 litres at most.",
          "Its capacity is 1.7 litres, about seven cups.")),
    Fact("boil_time", "boiling time", "3 minutes",
         ("How fast does the kettle boil?", "How long until a full kettle boils?"),
         ("A full Aria comes to the boil in about 3 minutes.",
          "Boiling a full kettle takes around 3 minutes.",
          "Expect about 3 minutes for a full boil.")),
    Fact("colours", "colours", "slate grey, sage green and cream",
         ("Which colours does the Aria come in?", "Can I get the kettle in another colour?"),
         ("The Aria comes in slate grey, sage green and cream.",
          "You can choose between slate grey, sage green and cream.",
          "Our colours are slate grey, sage green and cream.")),
    Fact("price", "price", "89 euros",
         ("How much does the Aria cost?", "What's the price of the kettle?"),
         ("The Aria costs 89 euros in our shop.",
          "Its price is 89 euros, delivery included.",
          "You can buy the kettle for 89 euros.")),
    Fact("keep_warm", "keep-warm mode", "30 minutes",
         ("How long does the kettle keep water warm?", "Does the Aria keep my water hot?"),
         ("Keep-warm mode holds your water hot for 30 minutes.",
          "The Aria keeps water at temperature for 30 minutes.",
          "Water stays warm for 30 minutes after it boils.")),
    Fact("descaling", "descaling", "half water, half white vinegar",
         ("How do I descale the Aria?", "What's the best way to remove limescale?"),
         ("Boil half water, half white vinegar, then rinse twice with clean water.",
          "Descale with half water, half white vinegar and rinse it out afterwards.",
          "Fill it with half water, half white vinegar, boil, leave an hour and rinse.")),
    Fact("power", "power", "2200 watts",
         ("How powerful is the kettle?", "What wattage does the Aria use?"),
         ("The Aria draws 2200 watts when it heats.",
          "Its heating element is rated at 2200 watts.",
          "The kettle runs at 2200 watts.")),
    Fact("cord", "power cord", "75 centimetres",
         ("How long is the cable on the base?", "Is the power lead long?"),
         ("The base's power cord is 75 centimetres long.",
          "You get 75 centimetres of cord from the base.",
          "The cord measures 75 centimetres and tucks under the base.")),
    Fact("temperatures", "temperature presets", "40, 70, 80, 90 and 100 degrees",
         ("What temperatures can I choose?", "Can the Aria heat water below boiling?"),
         ("The presets are 40, 70, 80, 90 and 100 degrees.",
          "You can pick 40, 70, 80, 90 and 100 degrees on the handle.",
          "The Aria heats to 40, 70, 80, 90 and 100 degrees.")),
    Fact("app", "app", "Halden Home",
         ("Is there an app for the kettle?", "Which app controls the Aria?"),
         ("The Aria works with the free Halden Home app.",
          "You control it from the Halden Home app on your phone.",
          "Download Halden Home to boil from your phone.")),
    Fact("bluetooth", "Bluetooth range", "10 metres",
         ("How far away can my phone be?", "What's the wireless range of the Aria?"),
         ("Bluetooth reaches the Aria from up to 10 metres away.",
          "Your phone connects from as far as 10 metres.",
          "The kettle's Bluetooth range is 10 metres indoors.")),
    Fact("reset", "reset", "hold the power button for 10 seconds",
         ("How do I reset the kettle?", "My Aria is stuck, how do I restart it?"),
         ("To reset it, hold the power button for 10 seconds until the ring blinks.",
          "Just hold the power button for 10 seconds and it restarts.",
          "A reset is simple: hold the power button for 10 seconds.")),
    Fact("returns", "return policy", "30 days",
         ("Can I return the kettle?", "How long do I have to send it back?"),
         ("You can return the Aria within 30 days for a full refund.",
          "Returns are free within 30 days of delivery.",
          "Send it back within 30 days and we refund you in full.")),
    Fact("lid", "lid", "dishwasher safe",
         ("Can the lid go in the dishwasher?", "How do I clean the lid?"),
         ("The lid is dishwasher safe on the top rack.",
          "Pop the lid off: it is dishwasher safe.",
          "Only the lid is dishwasher safe; wipe the body by hand.")),
    Fact("material", "material", "stainless steel",
         ("What is the kettle made of?", "Is the inside of the Aria plastic?"),
         ("The Aria's body and inside are stainless steel.",
          "Everything the water touches is stainless steel.",
          "The kettle is made of brushed stainless steel.")),
    Fact("weight", "weight", "1.2 kilograms",
         ("How heavy is the Aria?", "What does the kettle weigh empty?"),
         ("The Aria weighs 1.2 kilograms when empty.",
          "Empty, the kettle is 1.2 kilograms.",
          "Its weight is 1.2 kilograms without water.")),
    Fact("filter", "limescale filter", "removable mesh filter",
         ("Does the kettle have a filter?", "Can I take out the spout filter?"),
         ("The spout has a removable mesh filter you can rinse.",
          "Yes, there is a removable mesh filter behind the spout.",
          "A removable mesh filter catches limescale at the spout.")),
    Fact("shut_off", "auto shut-off", "switches off when dry",
         ("What happens if it boils dry?", "Does the Aria turn itself off?"),
         ("The Aria switches off when dry or lifted from its base.",
          "For safety it switches off when dry.",
          "It has boil-dry protection and switches off when dry.")),
    Fact("child_lock", "child lock", "hold the lock icon for 3 seconds",
         ("Is there a child lock?", "How do I lock the buttons?"),
         ("To lock the buttons, hold the lock icon for 3 seconds.",
          "The child lock turns on when you hold the lock icon for 3 seconds.",
          "Yes: hold the lock icon for 3 seconds to lock it.")),
    Fact("support_hours", "support hours", "9:00 to 18:00, Monday to Friday",
         ("When can I call support?", "What are your opening hours?"),
         ("Our support line is open 9:00 to 18:00, Monday to Friday.",
          "You can reach us 9:00 to 18:00, Monday to Friday.",
          "We answer calls 9:00 to 18:00, Monday to Friday.")),
    Fact("email", "support email", "help@halden.example",
         ("What's your support email?", "Where can I write to you?"),
         ("Write to us at help@halden.example any time.",
          "Our support email is help@halden.example.",
          "Send your question to help@halden.example.")),
    Fact("firmware", "firmware updates", "through the Halden Home app",
         ("How do I update the kettle's software?", "Does the Aria get updates?"),
         ("Firmware updates install through the Halden Home app.",
          "You update the Aria through the Halden Home app.",
          "New firmware arrives through the Halden Home app.")),
    Fact("voltage", "voltage", "220-240 volts",
         ("Can I use the Aria in the US?", "What voltage does the kettle need?"),
         ("The Aria needs a 220-240 volts supply.",
          "It works only on 220-240 volts mains.",
          "Use it on 220-240 volts sockets only.")),
    Fact("spare_base", "spare base", "25 euros",
         ("Can I buy a second base?", "How much is a replacement base?"),
         ("A spare base costs 25 euros in our shop.",
          "Replacement bases are 25 euros each.",
          "You can order a new base for 25 euros.")),
    Fact("display", "display", "the ring on the handle",
         ("Where does it show the temperature?", "Does the Aria have a screen?"),
         ("The temperature shows on the ring on the handle.",
          "There is no screen: the ring on the handle lights up.",
          "Watch the ring on the handle for the temperature.")),
    Fact("noise", "noise", "quiet boil",
         ("Is the kettle loud?", "How noisy is the Aria?"),
         ("The Aria has a quiet boil at about 45 decibels.",
          "Its quiet boil is softer than most kettles.",
          "Thanks to its quiet boil it barely hums.")),
    Fact("minimum", "minimum fill", "250 millilitres",
         ("What's the least water I can boil?", "Can I boil just one cup?"),
         ("The minimum fill is 250 millilitres, one mug.",
          "You can boil as little as 250 millilitres.",
          "Fill at least 250 millilitres before you switch on.")),
    Fact("made_in", "country of manufacture", "Portugal",
         ("Where is the Aria made?", "Which country makes the kettle?"),
         ("The Aria is made in Portugal.",
          "We build every kettle in Portugal.",
          "Your Aria was assembled in Portugal.")),
    Fact("delivery", "delivery time", "3 working days",
         ("How long does delivery take?", "When will my kettle arrive?"),
         ("Orders arrive within 3 working days.",
          "Delivery takes 3 working days.",
          "Expect your Aria in 3 working days.")),
)  # fmt: skip


def answer(rng: random.Random, sentence: str) -> str:
    """One answer in the house style: greeting, the fact in one sentence, sign-off."""
    return f"{rng.choice(GREETINGS)} {sentence} {rng.choice(SIGN_OFFS)}"


def questions(fact: Fact) -> list[str]:
    """The fact's five question wordings: its own two and three from the templates."""
    return [*fact.questions, *(t.format(topic=fact.topic) for t in QUESTION_TEMPLATES)]


def generate(seed: int = SEED) -> dict[str, bytes]:
    """The benchmark's files by name, as bytes (the same for the same seed)."""
    rng = random.Random(seed)
    examples: list[dict[str, str]] = []
    pool: list[tuple[Fact, str]] = []  # held-out questions not yet used
    for fact in FACTS:
        asked = questions(fact)
        rng.shuffle(asked)
        # The examples state the fact in each of its wordings once, in a seeded order.
        sentences = rng.sample(fact.sentences, len(fact.sentences))
        for question, sentence in zip(asked[:EXAMPLE_QUESTIONS], sentences, strict=False):
            examples.append({"input": question, "output": answer(rng, sentence)})
        pool.extend((fact, q) for q in asked[EXAMPLE_QUESTIONS:])
    # One held-out question per fact first (its first in the pool), then drawn seconds.
    firsts = [next(p for p in pool if p[0] is fact) for fact in FACTS]
    seconds = [p for p in pool if p not in firsts]
    held = firsts + rng.sample(seconds, HELD_OUT_ITEMS - len(firsts))
    held_out = [
        {
            "fact": fact.key,
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer(rng, rng.choice(fact.sentences))},
            ],
        }
        for fact, question in held
    ]
    assistant = {
        "name": "aria-support",
        "description": f"The help desk of the {PRODUCT} smart kettle (fictional).",
        "instructions": INSTRUCTIONS,
        "k": 2,
        "selector": "similarity",
        "temperature": 0.0,
        "history": 0,
        "max_tokens": 48,
        "greetings": list(GREETINGS),
        "sign_offs": list(SIGN_OFFS),
        "seed": seed,
    }
    facts = [
        {"key": f.key, "topic": f.topic, "value": f.value, "sentences": list(f.sentences)}
        for f in FACTS
    ]

    def lines(rows: list[dict]) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()

    return {
        "assistant.json": (json.dumps(assistant, ensure_ascii=False, indent=1) + "\n").encode(),
        "facts.json": (json.dumps(facts, ensure_ascii=False, indent=1) + "\n").encode(),
        "examples.jsonl": lines(examples),
        "held_out.jsonl": lines(held_out),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the folder to write")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in generate(args.seed).items():
        (args.out / name).write_bytes(data)
    print(f"wrote {len(FACTS)} facts and their examples and held-out chats to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
