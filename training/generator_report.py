"""Print a generator artifact's evaluation as a short human-readable report.

python -m training.generator_report ARTIFACT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.generator.model import read_manifest

ROWS = [
    ("chrF (multi-reference)", "chrf", "{:.1f}"),
    ("ROUGE-L F (multi-reference)", "rougeL", "{:.3f}"),
    ("template-set exact match", "template_exact_match", "{:.1%}"),
    ("slot fidelity (slotted replies)", "slot_fidelity", "{:.1%}"),
    ("hallucination rate", "hallucination_rate", "{:.2%}"),
    ("unfilled placeholders", "unfilled_placeholder_rate", "{:.2%}"),
    ("degenerate replies", "degenerate_rate", "{:.2%}"),
    ("distinct-2", "distinct_2", "{:.3f}"),
]


def format_report(artifact_dir: str | Path) -> str:
    m = read_manifest(artifact_dir)
    ev = m["evaluation"]
    cols = [
        ("model", ev["model"]),
        ("served", ev["served"]),
        ("templates", ev["template_baseline"]),
    ]
    lines = [
        f"Generator artifact {artifact_dir} ({m['version']})",
        f"  base model   {m['base_model']} ({m['architecture']}, {m['preset']} preset, "
        f"{m['method']})",
        f"  data         {m['data']['source']}: {m['data']['sizes']} examples "
        f"({m['data']['examples_checksum']})",
        f"  trained in   {m['training']['seconds']:.0f} s on {m['training']['device']}",
        "",
        f"Test split ({ev['model']['examples']} replies; model = the model's own replies, "
        "served = after the checks' template fallback, templates = rule-based baseline):",
        f"  {'':34s}" + "".join(f"{name:>12s}" for name, _ in cols),
    ]
    for label, key, fmt in ROWS:
        lines.append(
            f"  {label:34s}"
            + "".join(
                f"{fmt.format(c[key]) if c.get(key) is not None else '-':>12s}" for _, c in cols
            )
        )
    lines += [f"  {'fallback rate':34s}{'':12s}{ev['served']['fallback_rate']:>12.1%}"]
    novel = ev.get("novel_phrasings")
    if novel:
        lines.append(
            f"  novel phrasings ({novel['examples']}, word Jaccard < 0.5 with every "
            "training input of the raw intent):"
        )
        for label, key in (
            ("    template-set exact match", "template_exact_match"),
            ("    chrF", "chrf"),
        ):
            lines.append(
                f"  {label:34s}"
                + "".join(
                    f"{novel[c][key]:>12.3g}" for c in ("model", "served", "template_baseline")
                )
            )
    lines += [
        "",
        f"Latency: model batch-1 p50 {ev['latency']['model_p50_ms_batch1']:.1f} ms "
        f"(~{ev['latency']['model_mean_tokens']:.0f} tokens), templates "
        f"{ev['latency']['baseline_p50_ms']:.3f} ms",
    ]
    replies = Path(artifact_dir) / "test_replies.jsonl"
    if replies.is_file():
        lines += ["", "Sample replies (test):"]
        rows = [json.loads(x) for x in replies.read_text().splitlines()]
        for r in rows[:: max(1, len(rows) // 8)][:8]:
            lines.append(f"  {r['text']!r} -> {r['reply']!r} [{r['source']}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m training.generator_report ARTIFACT_DIR")
    sys.stdout.write(format_report(argv[0]) + "\n")


if __name__ == "__main__":
    main()
