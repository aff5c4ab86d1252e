"""A deterministic stand-in for the classifier service, for tests whose point is the
gateway's dialogue logic (forms, corrections, confirmations), not the model: keyword rules
over the real classifier's HTTP contract. `##slow` in a text makes it answer after 3 s;
`##unsure` gives its intent a low confidence just ahead of a runner-up.
BORDERLINE phrases come back out of scope but in the borderline band (the intent on top),
as a real artifact's band would return them.

    python -m tests.standin_classifier --port P
"""

from __future__ import annotations

import argparse
import asyncio
import re

from fastapi import FastAPI

RULES = [
    (r"\b(never ?mind|cancel)\b", "cancel"),
    (r"^(yes|yeah|sure|yep)\b", "yes"),
    (r"^(no|nope)\b", "no"),
    (r"^maybe\b", "maybe"),
    (r"\b(transfer|send|move money)\b", "transfer"),
    (r"\bpay\b.*\bbill\b", "pay_bill"),
    (r"\bflight\b", "book_flight"),
    (r"\b(table|reservation)\b", "restaurant_reservation"),
    (r"\bremind\b", "reminder"),
    (r"\bweather\b", "weather"),
    (r"\btime is it\b", "time"),
    (r"\bbalance\b", "balance"),
    (r"\b(hello|hi)\b", "greeting"),
    (r"\btimer\b", "timer"),
    (r"\b(bye|goodbye)\b", "goodbye"),
    (r"\byour name\b", "what_is_your_name"),
    (r"\bwho (made|built) you\b", "who_made_you"),
    (r"\bfun fact\b", "fun_fact"),
    (r"\balarm\b", "alarm"),
    (r"\bspell\b", "spelling"),
]
BORDERLINE = [
    (r"\bfly somewhere\b", "book_flight"),
    (r"\bwake-up call\b", "alarm"),
]

app = FastAPI()


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ready"}


@app.post("/v1/classify")
async def classify(body: dict) -> dict:
    preds = []
    for text in body["texts"]:
        if "##slow" in text:
            await asyncio.sleep(3)
        intent = next((i for p, i in RULES if re.search(p, text.lower())), "oos")
        top = next((i for p, i in BORDERLINE if re.search(p, text.lower())), None)
        conf = 0.95 if intent != "oos" else 0.5
        unsure = "##unsure" in text and intent != "oos"
        if unsure:
            conf = 0.42
        ranked = [{"intent": top or intent, "score": conf}]
        if (body.get("top_k") or 1) > 1:
            ranked.append({"intent": "greeting", "score": 0.38 if unsure else 0.01})
        preds.append(
            {
                "intent": intent,
                "confidence": conf,
                "oos": intent == "oos",
                "oos_score": conf,
                "borderline": top is not None,
                "top_k": ranked,
            }
        )
    return {"predictions": preds, "model": {"version": "standin"}}


if __name__ == "__main__":
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=p.parse_args().port, log_level="warning")
