"""Classifier service settings side by side: every configuration's service up at once, the
load levels interleaved round by round, so that a slow moment of a shared machine falls on
all of them alike (two runs minutes apart differ by more than the settings often do).

    python -m benchmarks.classifier_configs --artifact artifacts/classifier \
        --config one-worker:CLASSIFIER_WORKERS=1 --config default
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.http_load import rss_mb, server, wrk
from benchmarks.run import sample_texts


def parse_config(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME` or `NAME:KEY=VALUE[,KEY=VALUE...]`."""
    name, _, rest = spec.partition(":")
    env = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, env


def run(
    artifact: str,
    configs: list[tuple[str, dict[str, str]]],
    clients: list[int],
    seconds: int,
    rounds: int,
) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(t.replace("\n", " ") for t in sample_texts()))
        texts = Path(f.name)
    out: dict = {name: {str(c): [] for c in clients} for name, _ in configs}
    with contextlib.ExitStack() as stack:
        urls = {}
        for name, env in configs:
            env = {"CLASSIFIER_LOG_LEVEL": "WARNING", **env}
            urls[name] = stack.enter_context(
                server(["services.classifier", "--artifact", artifact], env)
            )
        for url, _ in urls.values():
            wrk(url, 4, 2, texts)  # warm-up
        for _ in range(rounds):
            for c in clients:
                for name, (url, _) in urls.items():
                    r = wrk(url, c, seconds, texts)
                    keep = ("throughput", "p50_ms", "errors")
                    out[name][str(c)].append({k: r[k] for k in keep})
        for name, (_, pid) in urls.items():
            out[name]["memory"] = rss_mb(pid)
    texts.unlink()
    return out


def markdown(result: dict, clients: list[int]) -> str:
    head = "| settings | " + " | ".join(f"{c} client(s): req/s, p50 ms" for c in clients) + " |"
    lines = [head, "|---|" + "---|" * len(clients)]
    for name, levels in result.items():
        cells = []
        for c in clients:
            rows = levels[str(c)]
            rps = statistics.median(r["throughput"] for r in rows)
            p50s = " / ".join(f"{r['p50_ms']:.2f}" for r in rows)
            cells.append(f"{rps:.0f}, {p50s}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("(requests/s: the median of the rounds; p50: each round's, in order)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument(
        "--config",
        action="append",
        required=True,
        help="NAME or NAME:KEY=VALUE[,KEY=VALUE] (repeatable): one service per config",
    )
    p.add_argument("--clients", default="1,16,64")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the raw figures here")
    args = p.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    configs = [parse_config(c) for c in args.config]
    result = run(args.artifact, configs, clients, args.seconds, args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(markdown(result, clients))


if __name__ == "__main__":
    main()
