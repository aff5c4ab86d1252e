"""`parlance`: one command for assistant packs and the stack.

    parlance init DIR                      a minimal working pack to start from
    parlance import rasa|csv|snips|clinc150 SRC --output PACK
    parlance validate PACK                 every problem, one line each; exit 1 on errors
    parlance train PACK --output ARTIFACTS [--preset cpu|demo|paper] [--continue-from OLD]
    parlance evaluate ARTIFACTS/classifier
    parlance run PACK --artifacts ARTIFACTS [--port P]
    parlance test PACK [--url URL]         the pack's scripted conversations
    parlance shell [--url URL]             chat with a running gateway
    parlance review list|counts|accept|relabel|discard|export   the review inbox

The `python -m services.*` and `python -m training.*` entry points stay: they are the
containers' commands, and what these subcommands run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

INIT_FILES = {
    "assistant.yml": """\
# The assistant: its name (artifacts record it) and version. docs/assistant-packs.md
name: {name}
version: "0.1.0"
language: en
description: A new Parlance assistant.
default_timezone: UTC
""",
    "intents.yml": """\
# What users may want, with examples as they would type them; annotate slot values with
# [text](slot). test_examples are held out for evaluation.
intents:
  greet:
    examples: [hi, hello, hey there, good morning, hiya, hello assistant]
    test_examples: [hey, morning]
  order_coffee:
    examples:
      - i'd like a coffee
      - a [large](size) latte please
      - can i get a [small](size) cappuccino
      - coffee please
      - order a [medium](size) flat white
      - one coffee to go
    test_examples: ["get me a [large](size) coffee", i want coffee]
  affirm:
    examples: ["yes", yep, sure, correct, that's right, go ahead]
  deny:
    examples: ["no", nope, not really, no thanks, don't]
""",
    "slots.yml": """\
# Slot types of your own (a list of values with synonyms, a regex, free text) and the slots.
types:
  cup_size:
    kind: list
    values:
      small: [short, little]
      medium: [regular, tall]
      large: [big, grande]
slots:
  size: {type: cup_size}
""",
    "responses.yml": """\
# Replies per intent; <slot> placeholders are filled from the user's text.
intents:
  greet: ["Hello! Would you like a coffee?", "Hi! What can I get you?"]
""",
    "forms.yml": """\
# A form asks for each missing slot, confirms, then completes.
forms:
  coffee_order:
    intents: [order_coffee]
    slots:
      - {slot: size, prompt: "Which size would you like: small, medium or large?"}
    confirm: One <size> coffee. Shall I order it?
    done: Your <size> coffee is on its way.
""",
    "dialogue.yml": """\
# Which intents say yes and no (mid-form and outside), and the fallback texts.
meta_intents:
  affirm: [affirm]
  deny: [deny]
fallback:
  capabilities: I can take your coffee order. Try "a large latte please".
""",
    "tests/conversations.yml": """\
# Scripted conversations: `parlance test PACK` runs them against a running gateway.
conversations:
  - name: order in two turns
    turns:
      - {user: coffee please, intent: order_coffee, form: coffee_order, awaiting: size}
      - {user: large, slots: {size: large}}
      - {user: "yes", form: none, reply_contains: [large coffee is on its way]}
""",
}


def cmd_init(args) -> int:
    root = Path(args.dir)
    if root.exists() and any(root.iterdir()):
        print(f"{root} exists and is not empty", file=sys.stderr)
        return 2
    name = args.name or root.resolve().name.replace("-", "_").lower()
    for rel, text in INIT_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{name}", name), encoding="utf-8")
    print(
        f"created pack {name!r} in {root}: edit intents.yml, then "
        f"`parlance validate {root}` and `parlance train {root} --output artifacts/{name}`"
    )
    return 0


def cmd_validate(args) -> int:
    from parlance.pack import check_pack

    pack, problems = check_pack(args.pack)
    for p in problems:
        print(p)
    n_err = sum(p.severity == "error" for p in problems)
    n_warn = len(problems) - n_err
    if pack is not None and not n_err:
        n_ex = sum(len(x) for x in pack.examples.values())
        print(
            f"{pack.name} {pack.version}: {len(pack.intents)} intents, {n_ex} inline "
            f"examples, {len(pack.slots_file.slots)} slots, "
            f"{len(pack.forms_file.forms)} forms; {n_warn} warning(s), no errors"
        )
    else:
        print(f"{n_err} error(s), {n_warn} warning(s)")
    return 1 if n_err else 0


def cmd_import(args) -> int:
    from parlance.importers import IMPORTERS, PackImportError

    try:
        report = IMPORTERS[args.format](
            Path(args.source), Path(args.output), name=args.name, overwrite=args.overwrite
        )
    except PackImportError as e:
        print(f"import failed: {e}", file=sys.stderr)
        return 2
    print(report.summary() if hasattr(report, "summary") else report)
    return 0


def _python(module: str, *argv: str) -> int:
    return subprocess.call([sys.executable, "-m", module, *argv])


def cmd_train(args) -> int:
    from parlance.pack import load_pack

    pack = load_pack(args.pack)
    out = Path(args.output)
    extra = list(args.extra or [])
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    # The classifier's alone: the generator has no such flags.
    continued = []
    if args.continue_epochs is not None:
        continued += ["--continue_epochs", str(args.continue_epochs)]
    if args.continue_from:
        continued += ["--continue_from", args.continue_from]
    rc = _python(
        "training.classifier",
        "--pack",
        str(pack.root),
        "--preset",
        args.preset,
        "--output-dir",
        str(out / "classifier"),
        *data,
        *continued,
        *extra,
    )
    if rc or not pack.label_map.generated or args.classifier_only:
        return rc
    return _python(
        "training.generator",
        "--pack",
        str(pack.root),
        "--preset",
        args.preset,
        "--output-dir",
        str(out / "generator"),
        *data,
        *extra,
    )


def cmd_evaluate(args) -> int:
    from training.compare import Limits

    if (args.artifact is None) == (args.compare is None):
        print("give one ARTIFACT to evaluate, or --compare OLD NEW", file=sys.stderr)
        return 2
    if args.compare is None:
        if args.json or args.oos_probes or Limits.from_args(args) != Limits():
            print("--json, --oos-probes and the gate flags need --compare", file=sys.stderr)
            return 2
        shared = []
        for flag, value in (
            ("--pack", args.pack),
            ("--data-dir", args.data_dir),
            ("--backend", args.backend),
        ):
            if value is not None:
                shared += [flag, value]
        return _python("training.evaluate", "--artifact", args.artifact, *shared)
    from training.compare import run

    args.old, args.new = args.compare
    args.backend = args.backend or "onnx"
    return run(args)


def cmd_run(args) -> int:
    from parlance.pack import load_pack
    from services.local_stack import Stack, serve_forever, wants_example_actions

    pack = load_pack(args.pack)
    artifacts = Path(args.artifacts)
    generator = artifacts / "generator"
    stack = Stack(
        artifacts / "classifier",
        generator if generator.is_dir() else None,
        host=args.host,
        port=args.port,
        classifier_port=args.port + 1,
        generator_port=args.port + 2,
        gateway_env={"PARLANCE_PACK": str(pack.root.resolve())},
        actions_port=args.port + 3 if wants_example_actions(pack) else None,
    )
    return serve_forever(stack)


def cmd_test(args) -> int:
    from parlance.conversations import RunOptions, run_conversations

    opts = RunOptions(
        generator=args.generator,
        intents=frozenset(args.intents.split(",")) if args.intents else None,
        idle_s=args.form_idle_s,
    )
    return run_conversations(args.pack, args.url, api_key=args.api_key, opts=opts)


def cmd_shell(args) -> int:
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    session = None
    print(f"chatting with {args.url} (Ctrl-D to quit)")
    with httpx.Client(base_url=args.url, timeout=30, headers=headers) as client:
        while True:
            try:
                text = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if not text:
                continue
            try:
                r = client.post("/v1/chat", json={"text": text, "session_id": session})
            except httpx.HTTPError as e:
                print(f"(gateway unreachable: {e})")
                continue
            body = r.json()
            if r.status_code != 200:
                print(f"({r.status_code}: {body.get('error', {}).get('message', body)})")
                continue
            session = body["session_id"]
            i = body["intent"]
            print(f"bot> {body['reply']}")
            print(
                f"     [{i['raw']} {i['confidence']:.2f} -> {i['core']}, {body['source']}"
                + (f", form {body['state']['active_form']}" if body["state"]["active_form"] else "")
                + "]"
            )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parlance", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    url = os.environ.get("PARLANCE_URL", "http://127.0.0.1:8000")
    key = os.environ.get("PARLANCE_API_KEY")

    s = sub.add_parser("init", help="scaffold a minimal working pack")
    s.add_argument("dir")
    s.add_argument("--name")
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("import", help="convert another format into a pack")
    s.add_argument("format", choices=["rasa", "csv", "snips", "clinc150"])
    s.add_argument("source")
    s.add_argument("--output", required=True)
    s.add_argument("--name")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=cmd_import)

    s = sub.add_parser("validate", help="check a pack; exit 1 on errors")
    s.add_argument("pack")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("train", help="train the classifier (and generator) of a pack")
    s.add_argument("pack")
    s.add_argument("--output", required=True, help="artifacts directory")
    s.add_argument("--preset", default="cpu", choices=["cpu", "demo", "paper"])
    s.add_argument("--data-dir", help="external examples (CLINC150's oos-eval directory)")
    s.add_argument("--classifier-only", action="store_true")
    s.add_argument(
        "--continue-from",
        metavar="OLD_CLASSIFIER_DIR",
        help="a previous classifier artifact: when the intents (and base model, method, "
        "head) are unchanged, the classifier starts from its weights for a few epochs; "
        "otherwise it trains from scratch and says why",
    )
    s.add_argument(
        "--continue-epochs",
        type=float,
        metavar="N",
        help="epochs when continuing (default 1)",
    )
    s.epilog = "Flags after `--` go to the trainers (python -m training.classifier --help)."
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser(
        "evaluate",
        help="re-evaluate a classifier artifact, or compare two and gate the new one",
        description="`parlance evaluate ARTIFACT` reruns an artifact's evaluation "
        "(training.evaluate); `parlance evaluate --compare OLD NEW` compares two on NEW's "
        "data and refuses NEW (exit 1) when a gate rule fails (training.compare).",
    )
    s.add_argument("artifact", nargs="?", help="the artifact to re-evaluate")
    s.add_argument(
        "--compare",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="compare two artifacts; exit 0 promote NEW, 1 refused, 2 not comparable",
    )
    # The comparison's own flags, defined once in training.compare (standard library only
    # at import, so building this parser stays cheap).
    from training.compare import add_arguments as add_compare_arguments

    add_compare_arguments(s, artifacts=False)
    # None instead of "onnx": `parlance evaluate ARTIFACT` passes only the flags given
    s.set_defaults(fn=cmd_evaluate, backend=None)

    s = sub.add_parser("run", help="the stack as local processes")
    s.add_argument("pack")
    s.add_argument("--artifacts", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("test", help="run the pack's conversation tests against a gateway")
    s.add_argument("pack")
    s.add_argument("--url", default=url)
    s.add_argument("--api-key", default=key)
    s.add_argument(
        "--generator",
        choices=["up", "down"],
        default="up",
        help="'down': the gateway's generator is stopped (degraded mode); runs the "
        "conversations meant for it and skips those that need the generator",
    )
    s.add_argument(
        "--form-idle-s",
        type=float,
        default=None,
        help="the gateway's GATEWAY_FORM_IDLE_S: conversations with an 'idle' turn wait "
        "that long (skipped without it)",
    )
    s.add_argument(
        "--intents",
        default=None,
        help="comma-separated intents the classifier knows (one trained on a subset): "
        "conversations expecting others are skipped",
    )
    s.set_defaults(fn=cmd_test)

    from parlance.review.cli import add_parser as add_review

    add_review(sub)

    s = sub.add_parser("shell", help="chat with a running gateway in the terminal")
    s.add_argument("--url", default=url)
    s.add_argument("--api-key", default=key)
    s.set_defaults(fn=cmd_shell)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:  # `parlance train PACK --output A -- --num_train_epochs 3`
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if extra and args.command != "train":
        parser.error("flags after -- are for `parlance train` only")
    args.extra = extra
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
