"""A back-end for the action benchmark: verifies the signature, waits
SLOW_BACKEND_DELAY_S (default 0.2 s) as a real back-end's database or payment call would,
and answers a balance.

    PARLANCE_ACTION_SECRET=... SLOW_BACKEND_DELAY_S=0.2 python -m benchmarks.slow_backend --port P
"""

from __future__ import annotations

import argparse
import asyncio
import os

from fastapi import FastAPI, HTTPException, Request

from parlance.webhooks import SIGNATURE_HEADER, verify

app = FastAPI()
SECRET = os.environ.get("PARLANCE_ACTION_SECRET", "")
DELAY_S = float(os.environ.get("SLOW_BACKEND_DELAY_S", "0.2"))


@app.post("/actions/{name}")
async def run(name: str, request: Request) -> dict:
    if not verify(SECRET, await request.body(), request.headers.get(SIGNATURE_HEADER)):
        raise HTTPException(401, "bad signature")
    await asyncio.sleep(DELAY_S)
    return {"facts": {"balance": "$1,250.00"}}


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ready"}


if __name__ == "__main__":
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=p.parse_args().port, log_level="warning")
