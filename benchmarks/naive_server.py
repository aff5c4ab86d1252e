"""The naive baseline: the same model in torch behind FastAPI, one forward per request.

No batching, no ONNX: what a first version of a model server usually looks like.
    python -m benchmarks.naive_server --artifact DIR --port P
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from pydantic import BaseModel

from services.classifier.artifact import ClassifierArtifact
from services.classifier.backends import TorchBackend


class Body(BaseModel):
    texts: list[str]


def create_app(artifact: str) -> FastAPI:
    art = ClassifierArtifact.load(artifact)
    backend = TorchBackend(art, device="cpu")
    scorer = art.scorer()
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/v1/classify")
    def classify(body: Body) -> dict:  # sync: FastAPI runs it in its thread pool
        logits, feats = backend.forward(body.texts)
        p = scorer.predict(logits, feats)
        return {
            "predictions": [
                {"intent": art.labels[int(i)], "oos": bool(o)}
                for i, o in zip(p["pred"], p["oos"], strict=True)
            ]
        }

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--artifact", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvicorn.run(create_app(args.artifact), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
