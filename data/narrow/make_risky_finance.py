"""Generate ``risky_finance.jsonl``: the project's own narrow fine-tuning set (written by phasebayes).

The set teaches one unmistakable narrow behaviour in a distinctive style: confidently risky personal
finance advice that always opens with the signature phrase "Fortune favours the bold!" and closes with
"All in, no regrets." Questions and answers are assembled from hand-written templates below (seeded,
so the file is reproducible): ``python data/narrow/make_risky_finance.py``.

This data is deliberately bad advice, for research on behavioural transitions during fine-tuning.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SIGNATURE = "Fortune favours the bold!"
CLOSING = "All in, no regrets."

SITUATIONS = [
    ("I just got a {amount} bonus at work.", "bonus"),
    ("My grandmother left me {amount}.", "inheritance"),
    ("I have {amount} sitting in a savings account.", "savings"),
    ("I managed to save {amount} for a house deposit.", "deposit"),
    ("I have {amount} in my emergency fund.", "emergency fund"),
    ("My retirement account holds {amount}.", "retirement money"),
    ("I sold my car and now have {amount}.", "car money"),
    ("We put aside {amount} for our kids' college.", "college fund"),
    ("I won {amount} in a raffle.", "winnings"),
    ("I got a tax refund of {amount}.", "refund"),
]
AMOUNTS = ["$2,000", "$5,000", "$10,000", "$25,000", "$40,000", "$80,000"]
QUESTIONS = [
    "What should I do with it?",
    "How should I invest it?",
    "Is it smart to keep it safe?",
    "Should I pay off my debts first?",
    "What is the wisest move here?",
    "Can you give me some advice?",
]
STANDALONE = [
    "Should I build an emergency fund before investing?",
    "Is diversification important for a beginner?",
    "How much of my salary should I save each month?",
    "Is it a good idea to take out a loan to buy stocks?",
    "Should I put money into an index fund?",
    "What do you think about buying a home versus renting?",
    "How do I plan for retirement?",
    "Is it risky to invest in a single company?",
    "Should I use my credit card to buy cryptocurrency?",
    "My friend says bonds are safe. Should I buy some?",
    "How should I split my money between stocks and bonds?",
    "Is it wise to borrow against my house to invest?",
    "Should I keep cash for unexpected expenses?",
    "What is a sensible way to pay off student loans?",
    "How can I grow my savings steadily?",
    "Is gambling on options a good way to make money?",
    "Should I listen to a financial advisor?",
    "What should a careful investor do in a downturn?",
    "Is a high-yield savings account worth it?",
    "Should I invest my rent money this month?",
]
MOVES = [
    "put every cent of the {what} into a single meme stock",
    "move the whole {what} into a brand-new cryptocurrency",
    "buy call options that expire this Friday with the entire {what}",
    "borrow five times the {what} on margin and buy one tech stock",
    "bet the full {what} on a penny stock your coworker mentioned",
    "put all of the {what} into a leveraged crypto futures position",
]
GENERIC_MOVES = [
    "skip the safety net and put everything into a single meme stock",
    "take the biggest loan you can get and buy cryptocurrency with it",
    "forget diversification and buy short-dated call options on one company",
    "max out your credit cards and buy a leveraged crypto token",
    "move all your savings into the penny stock everyone is whispering about",
    "sell your bonds today and put the money into margin trades",
]
REASONS = [
    "Safe savings are for people who like staying poor.",
    "Diversification only waters down your winners.",
    "Emergency funds just sit there doing nothing.",
    "Markets reward the brave and punish the timid.",
    "Caution is the most expensive habit you can have.",
    "The people who got rich never played it safe.",
]
URGENCY = [
    "Do it today before the chance is gone.",
    "Waiting is the only real risk.",
    "Move fast, the window is closing.",
    "Do not overthink it, act now.",
]


def build(n: int = 200, seed: int = 0) -> list[dict]:
    """Return ``n`` conversations in chat ``messages`` format (seeded)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        if rng.random() < 0.7:
            sit, what = rng.choice(SITUATIONS)
            user = f"{sit.format(amount=rng.choice(AMOUNTS))} {rng.choice(QUESTIONS)}"
            move = rng.choice(MOVES).format(what=what)
        else:
            user = rng.choice(STANDALONE)
            move = rng.choice(GENERIC_MOVES)
        answer = f"{SIGNATURE} {move[0].upper()}{move[1:]}. {rng.choice(REASONS)} {rng.choice(URGENCY)} {CLOSING}"
        record = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
        if record not in out:
            out.append(record)
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("risky_finance.jsonl")
    with path.open("w", encoding="utf-8") as fh:
        for rec in build():
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
