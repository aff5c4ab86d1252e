"""`parlance review`: the inbox from a terminal.

    parlance review list [--status new] [--intent X] [--reason R] [--limit N]
    parlance review counts
    parlance review accept ID...            the prediction was right
    parlance review relabel LABEL ID... --pack PACK
    parlance review discard ID...
    parlance review export PACK [--test-share 0.2] [--dry-run]

The inbox is `--db` (an SQLite path or a postgresql:// URL), by default $PARLANCE_REVIEW_DB,
else $GATEWAY_REVIEW_DB (what the gateway writes; set in its image), else
./parlance-review.db (the gateway's default too).
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_DB = "parlance-review.db"


def add_parser(sub) -> None:
    p = sub.add_parser("review", help="the review inbox: list, decide, export into a pack")
    p.add_argument(
        "--db",
        default=os.environ.get("PARLANCE_REVIEW_DB")
        or os.environ.get("GATEWAY_REVIEW_DB", DEFAULT_DB),
        help="inbox: SQLite path or postgresql:// URL (default $PARLANCE_REVIEW_DB, else "
        f"$GATEWAY_REVIEW_DB as the gateway reads it, else {DEFAULT_DB})",
    )
    rsub = p.add_subparsers(dest="review_command", required=True)
    s = rsub.add_parser("list", help="captured turns, newest first")
    s.add_argument("--status", default="new", help="new, accepted, discarded, exported or all")
    s.add_argument("--intent", default=None, help="predicted label (oos for out of scope)")
    s.add_argument("--reason", default=None, help="why captured, e.g. low_confidence")
    s.add_argument("--limit", type=int, default=50)
    rsub.add_parser("counts", help="captured turns per predicted label and status")
    s = rsub.add_parser("accept", help="the predicted label is right")
    s.add_argument("ids", type=int, nargs="+")
    s = rsub.add_parser("relabel", help="give items the right label")
    s.add_argument("label")
    s.add_argument("ids", type=int, nargs="+")
    s.add_argument("--pack", required=True, help="the pack whose labels are allowed")
    s = rsub.add_parser("discard", help="not worth learning from")
    s.add_argument("ids", type=int, nargs="+")
    s = rsub.add_parser("export", help="accepted items into PACK/reviewed.yml")
    s.add_argument("pack")
    s.add_argument("--test-share", type=float, default=0.2, help="share held out as tests")
    s.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")
    s.add_argument(
        "--data-dir",
        default=None,
        help="a pack with external examples (CLINC150): where they are, to deduplicate "
        "against them (default $CLINC150_DIR)",
    )
    p.set_defaults(fn=run)


def _open(args, create: bool = False):
    from parlance.review import ReviewStore

    return ReviewStore(args.db, create=create)


def _print_items(items) -> None:
    if not items:
        print("nothing here")
        return
    print(f"{'id':>6}  {'predicted':<24} {'conf':>5}  {'reasons':<28} {'status':<9} text")
    for i in items:
        predicted = (
            i.predicted
            if i.label is None or i.label == i.predicted
            else f"{i.predicted}->{i.label}"
        )
        print(
            f"{i.id:>6}  {predicted[:24]:<24} {i.confidence:>5.2f}  "
            f"{','.join(i.reasons)[:28]:<28} {i.status:<9} {i.text}"
        )


def _external_examples(pack, data_dir):
    """(label, text) of a pack whose examples live outside it, for deduplication."""
    if pack.assistant.examples_from is None:
        return []
    try:
        from training.data import load_pack_data

        data = load_pack_data(pack, data_dir)
    except Exception as e:  # noqa: BLE001 - export still works, with a warning
        print(
            f"warning: the pack's external examples were not read ({e}); "
            "duplicates of them are not detected",
            file=sys.stderr,
        )
        return []
    return [
        (label, text)
        for split in (data.train, data.val, data.test)
        for text, label in zip(split.texts, split.intents, strict=True)
    ]


def _export(args, store) -> int:
    from parlance.pack import PackError, load_pack
    from parlance.review.export import export_items

    if not 0 <= args.test_share < 1:
        print("--test-share must be in [0, 1)", file=sys.stderr)
        return 2
    try:
        pack = load_pack(args.pack)
    except PackError as e:
        print(e, file=sys.stderr)
        return 1
    accepted = store.accepted()
    mine = [i for i in accepted if i.pack_name == pack.name]
    others = len(accepted) - len(mine)
    if others:
        print(f"{others} accepted item(s) belong to other packs: left in the inbox")
    try:
        result = export_items(
            pack, mine, args.test_share, _external_examples(pack, args.data_dir), args.dry_run
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for item_id, text, where in result.duplicates:
        print(f"  duplicate #{item_id} {text!r}: already {where}")
    for item_id, text, label, where in result.conflicts:
        print(
            f"  conflict #{item_id} {text!r}: reviewed as {label}, but the pack has it as "
            f"{where}; left in the inbox (fix the pack, or relabel or discard the item)"
        )
    trained = sum(map(len, result.added.values()))
    held = sum(map(len, result.held_out.values()))
    verb = "would add" if args.dry_run else "added"
    print(
        f"{verb} {trained} example(s) and {held} held-out test(s) to {result.path} "
        f"({len(result.duplicates)} duplicate(s), {len(result.conflicts)} conflict(s) skipped)"
    )
    if not args.dry_run:
        store.mark_exported(result.exported_ids)
        if result.n_added:
            print(f"check it with: parlance validate {args.pack}; then parlance train")
    return 0


def run(args) -> int:
    from parlance.review import ReviewError

    try:
        store = _open(args)
    except ReviewError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        cmd = args.review_command
        if cmd == "list":
            status = None if args.status == "all" else args.status
            _print_items(store.items(status, args.intent, args.reason, args.limit))
        elif cmd == "counts":
            counts = store.counts()
            if not counts:
                print("nothing captured yet")
            for label, by_status in counts.items():
                detail = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
                print(f"{sum(by_status.values()):>6}  {label:<28} {detail}")
        elif cmd in ("accept", "discard"):
            _print_items(store.decide(args.ids, cmd))
        elif cmd == "relabel":
            from parlance.pack import PackError, load_pack

            try:
                labels = load_pack(args.pack).labels
            except PackError as e:
                print(e, file=sys.stderr)
                return 1
            if args.label not in labels:
                print(f"error: {args.label!r} is not a label of pack {args.pack}", file=sys.stderr)
                return 1
            _print_items(store.decide(args.ids, "relabel", args.label))
        elif cmd == "export":
            return _export(args, store)
        return 0
    except ReviewError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - parlance review
    parser = argparse.ArgumentParser(prog="parlance")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.fn(args)
