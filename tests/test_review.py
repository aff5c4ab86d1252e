"""The review inbox: redaction, capture rules, the store on SQLite and on a real PostgreSQL
(migrations, filters, decisions, retention), export into a pack with deduplication and
held-out tests, and `parlance review` on the command line."""

from __future__ import annotations

import contextlib
import shutil
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import yaml

from parlance.cli import main as parlance
from parlance.pack import check_pack, load_pack
from parlance.review import (
    CapturedTurn,
    CaptureRules,
    ReviewError,
    ReviewStore,
    TurnFacts,
    parse_reasons,
    redact,
)
from parlance.review.export import export_items, held_out
from tests.servers import postgres_database
from training.data import load_pack_data

# -- redaction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "kept"),
    [
        ("mail me at jane.doe+bikes@example.co.uk please", "mail me at <email> please"),
        ("my card is 4111 1111 1111 1111", "my card is <card_number>"),
        ("card 5500-0000-0000-0004 expires soon", "card <card_number> expires soon"),
        ("card 4111 1111 1111 1111 123 is mine", "card <card_number> 123 is mine"),  # + CVV
        ("5555555555554444 12/26", "<card_number> 12/26"),
        ("call me on +44 20 7946 0958", "call me on <phone_number>"),
        ("or on 555-0132", "or on <phone_number>"),
        ("my number is (415) 555-0132", "my number is <phone_number>"),
        ("text 5550132999", "text <phone_number>"),
        # not personal data: kept as typed
        ("order 4111111111111112 is late", "order 4111111111111112 is late"),  # fails Luhn
        ("where is order 12345678", "where is order 12345678"),
        ("book it for 2026-12-01 at 10", "book it for 2026-12-01 at 10"),
        ("i am 35 and want a 29 inch wheel", "i am 35 and want a 29 inch wheel"),
        ("are you open 9.00-17.30 on 12 05 2026", "are you open 9.00-17.30 on 12 05 2026"),
        ("models from 2019-2024 under 1 000 000", "models from 2019-2024 under 1 000 000"),
    ],
)
def test_redaction(said, kept):
    assert redact(said) == kept


# -- capture rules ---------------------------------------------------------------------


def facts(**changes) -> TurnFacts:
    base = dict(
        text="book a table",
        raw_intent="restaurant_reservation",
        core_intent="restaurant",
        confidence=0.95,
        oos=False,
        reply_source="fulfilment",
        second_intent="book_flight",
        margin=0.9,
    )
    return TurnFacts(**{**base, **changes})


def test_capture_rules_name_every_reason_that_holds():
    rules = CaptureRules(low_confidence=0.5, margin=0.1)
    assert rules.reasons(facts()) == ()  # confident, clear winner: not worth a look
    assert rules.reasons(facts(oos=True, raw_intent="oos", reply_source="fallback")) == (
        "out_of_scope",
        "fallback",
    )
    assert rules.reasons(facts(confidence=0.45, margin=0.4)) == ("low_confidence",)
    assert rules.reasons(facts(margin=0.05)) == ("small_margin",)
    assert rules.reasons(facts(events=frozenset({"corrected"}))) == ("form_correction",)
    # "$300" read by a form is no question for the classifier, whatever it predicted
    answer = facts(oos=True, raw_intent="oos", events=frozenset({"form_answer"}))
    assert rules.reasons(answer) == ()
    assert rules.reasons(facts(events=frozenset({"cancelled"}))) == ("form_cancelled",)
    only_oos = CaptureRules(enabled=parse_reasons("out_of_scope"))
    assert only_oos.reasons(facts(margin=0.01, oos=True)) == ("out_of_scope",)
    assert only_oos.reasons(facts(margin=0.01)) == ()
    with pytest.raises(ValueError, match="unknown capture reasons.*'typo'"):
        parse_reasons("out_of_scope,typo")


# -- the store, on both databases ---------------------------------------------------------


def turn(text: str, intent: str = "greet", **changes) -> CapturedTurn:
    base = dict(
        text=text,
        raw_intent=intent,
        core_intent=intent,
        confidence=0.4,
        oos=intent == "oos",
        reasons=("low_confidence",),
        reply_source="template",
        pack_name="bike_shop",
        pack_version="1.0.0",
        model_version="cpu-1",
    )
    return CapturedTurn(**{**base, **changes})


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = ReviewStore(str(tmp_path / "inbox.db"))
        yield s
        s.close()
    else:
        with postgres_database() as url:
            s = ReviewStore(url)
            yield s
            s.close()


def test_store_filters_counts_and_decisions(store):
    store.add(
        [
            turn("hiya friend"),
            turn("what is the meaning of life", "oos", reasons=("out_of_scope", "fallback")),
            turn("book my bike in", "book_repair", reasons=("small_margin",), margin=0.04),
        ]
    )
    assert [i.text for i in store.items()] == [
        "book my bike in",
        "what is the meaning of life",
        "hiya friend",
    ]
    assert [i.text for i in store.items(intent="oos")] == ["what is the meaning of life"]
    assert [i.text for i in store.items(reason="fallback")] == ["what is the meaning of life"]
    assert [i.text for i in store.items(reason="small_margin")][0] == "book my bike in"
    assert store.items(intent="book_repair")[0].margin == pytest.approx(0.04)
    assert store.counts() == {"greet": {"new": 1}, "oos": {"new": 1}, "book_repair": {"new": 1}}

    hi, life, book = sorted(i.id for i in store.items())
    [accepted] = store.decide([hi], "accept")
    assert (accepted.status, accepted.label) == ("accepted", "greet")
    [relabelled] = store.decide([life], "relabel", "opening_hours")
    assert (relabelled.status, relabelled.label) == ("accepted", "opening_hours")
    [discarded] = store.decide([book], "discard")
    assert discarded.status == "discarded" and discarded.reviewed_at is not None
    assert [i.text for i in store.accepted()] == ["hiya friend", "what is the meaning of life"]
    assert store.items(status="new") == []

    store.mark_exported([hi])
    with pytest.raises(ReviewError, match="exported into the pack already"):
        store.decide([hi], "discard")
    with pytest.raises(ReviewError, match="no captured turn with id 999"):
        store.decide([999], "accept")
    with pytest.raises(ReviewError, match="relabel needs the right label"):
        store.decide([life], "relabel")
    with pytest.raises(ReviewError, match="status: one of"):
        store.items(status="pending")


def test_retention_by_age_and_by_count(store):
    old = datetime.now(UTC) - timedelta(days=40)
    store.add([turn(f"old {n}", created_at=old) for n in range(3)])
    store.add([turn("old but accepted", created_at=old)])
    [kept] = store.items(status=None, limit=1)
    store.decide([kept.id], "accept")  # a reviewer's work, not exported yet
    store.add([turn(f"recent {n}") for n in range(5)])
    assert store.purge(max_age=timedelta(days=30)) == 3
    assert store.purge(max_items=2) == 3
    assert [i.text for i in store.items(status="new")] == ["recent 4", "recent 3"]
    assert [i.text for i in store.accepted()] == ["old but accepted"]
    assert store.purge(max_age=timedelta(days=30), max_items=2) == 0
    store.mark_exported([kept.id])  # exported: retention applies again
    assert store.purge(max_age=timedelta(days=30)) == 1


def test_the_schema_is_migrated_once_and_shared_by_replicas(store):
    with store.engine.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    store.add([turn("first replica")])
    replica = ReviewStore(store.url)  # a second gateway on the same inbox
    replica.add([turn("second replica")])
    assert {i.text for i in store.items()} == {"first replica", "second replica"}
    with replica.engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    replica.close()


def _open_store_at_the_barrier(url, barrier) -> None:
    barrier.wait()
    ReviewStore(url).close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_replicas_opening_a_new_inbox_at_once_all_start(kind, tmp_path):
    # A gateway and `parlance review` (or several gateways) opening one new inbox in the
    # same instant: each migrates or waits for the other, none fails on "already exists".
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for attempt in range(3):  # several rounds: one lucky ordering proves little
        with contextlib.ExitStack() as stack:
            if kind == "sqlite":
                url = str(tmp_path / f"inbox-{attempt}.db")
            else:
                url = stack.enter_context(postgres_database())
            barrier = context.Barrier(4)
            workers = [
                context.Process(target=_open_store_at_the_barrier, args=(url, barrier))
                for _ in range(4)
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join(60)
            assert [w.exitcode for w in workers] == [0, 0, 0, 0]
            store = ReviewStore(url)
            with store.engine.connect() as c:
                versions = c.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            store.close()
            assert [v for (v,) in versions] == ["0001"]


def test_migrations_downgrade_and_upgrade_again(tmp_path):
    from alembic import command
    from alembic.config import Config

    from parlance.review.store import MIGRATIONS

    s = ReviewStore(str(tmp_path / "inbox.db"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with s.engine.begin() as c:
        config.attributes["connection"] = c
        command.downgrade(config, "base")
    assert "captured_turns" not in sa.inspect(s.engine).get_table_names()
    s.close()
    again = ReviewStore(str(tmp_path / "inbox.db"))  # opening migrates to head
    again.add([turn("after the upgrade")])
    assert again.items()[0].text == "after the upgrade"
    again.close()


def test_an_inbox_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(ReviewError, match="no review inbox at .*missing.db"):
        ReviewStore(str(tmp_path / "missing.db"), create=False)


# -- export into a pack --------------------------------------------------------------------


@pytest.fixture
def bike_pack(tmp_path):
    root = tmp_path / "bike_shop"
    shutil.copytree(load_pack("bike_shop").root, root)
    return root


def accepted_items(tmp_path, pairs):
    s = ReviewStore(str(tmp_path / "inbox.db"))
    s.add([turn(text, "greet") for text, _ in pairs])
    items = sorted(s.items(), key=lambda i: i.id)
    for item, (_, label) in zip(items, pairs, strict=True):
        s.decide([item.id], "relabel", label)
    return s, s.accepted()


def test_export_deduplicates_and_holds_some_out(bike_pack, tmp_path):
    pairs = [
        ("  Hello There ", "greet"),  # intents.yml has "hello there"
        ("do you fix e-bikes on sundays", "opening_hours"),
        ("Do you fix  e-bikes on Sundays", "opening_hours"),  # the same, typed again
        ("what's the weather on mars", "oos"),
        *[(f"can you true my wheel number {n}", "book_repair") for n in range(12)],
    ]
    store, items = accepted_items(tmp_path, pairs)
    pack = load_pack(bike_pack)
    result = export_items(pack, items, test_share=0.3)
    assert [text for _, text, _ in result.duplicates] == [
        "  Hello There ",
        "Do you fix  e-bikes on Sundays",
    ]
    assert "greet in intents.yml" in result.duplicates[0][2]
    assert len(result.exported_ids) == len(pairs)
    assert result.n_added == len(pairs) - 2
    held = result.held_out.get("book_repair", [])
    assert 0 < len(held) < 12  # a share, chosen by the text's hash
    assert all(held_out(t, 0.3) for t in held)

    reloaded = load_pack(bike_pack)  # reviewed.yml passes the pack's checks
    side = "test_examples" if held_out("do you fix e-bikes on sundays", 0.3) else "examples"
    assert reloaded.reviewed_texts(side)["opening_hours"] == ["do you fix e-bikes on sundays"]
    problems = check_pack(bike_pack)[1]
    assert not [p for p in problems if p.file == "reviewed.yml"], problems
    data = load_pack_data(reloaded)
    trained = {t for texts in result.added.values() for t in texts}
    assert trained and trained <= set(data.train.texts)
    assert data.reviewed is not None and set(data.reviewed.texts) == {
        t for texts in result.held_out.values() for t in texts
    }
    assert "+reviewed" in data.source

    # Exporting the same items again adds nothing: they are all in the pack now.
    again = export_items(reloaded, items, test_share=0.3)
    assert again.n_added == 0 and len(again.duplicates) == len(pairs)
    store.close()


def test_reviewed_file_problems_name_the_file_and_entry(bike_pack):
    (bike_pack / "reviewed.yml").write_text(
        yaml.safe_dump(
            {
                "intents": {
                    "fly_to_mars": {"examples": ["take me to mars"]},
                    "greet": {"examples": ["yo bot"], "test_examples": ["yo bot"]},
                }
            }
        )
    )
    problems = [str(p) for p in check_pack(bike_pack)[1] if p.file == "reviewed.yml"]
    assert any("intents.fly_to_mars" in p and "not an intent" in p for p in problems), problems
    assert any("intents.greet.test_examples[0]" in p and "already reviewed" in p for p in problems)


def test_export_leaves_a_label_conflict_with_the_pack_for_a_person(bike_pack, tmp_path):
    # "hello there" is a greet example of intents.yml; a reviewer said goodbye
    store, items = accepted_items(
        tmp_path, [("Hello there", "goodbye"), ("hello there!!", "greet")]
    )
    result = export_items(load_pack(bike_pack), items)
    assert [(text, label) for _, text, label, _ in result.conflicts] == [("Hello there", "goodbye")]
    assert "greet in intents.yml" in result.conflicts[0][3]
    conflicted = result.conflicts[0][0]
    assert conflicted not in result.exported_ids and len(result.exported_ids) == 1
    store.mark_exported(result.exported_ids)
    assert [i.id for i in store.accepted()] == [conflicted]  # still in the inbox
    store.close()


def test_reason_filter_names_only_known_reasons(tmp_path):
    s = ReviewStore(str(tmp_path / "inbox.db"))
    s.add([turn("x", reasons=("form_correction",))])
    assert len(s.items(reason="form_correction")) == 1
    with pytest.raises(ReviewError, match="reason: one of"):
        s.items(reason="form%")
    s.close()


def test_export_refuses_a_label_the_pack_does_not_have(bike_pack, tmp_path):
    store, items = accepted_items(tmp_path, [("teleport me", "teleport")])
    with pytest.raises(ValueError, match="label 'teleport' is not an intent of pack"):
        export_items(load_pack(bike_pack), items)
    store.close()


# -- the command line ------------------------------------------------------------------------


def test_review_cli_lists_decides_and_exports(bike_pack, tmp_path, capsys):
    db = str(tmp_path / "inbox.db")
    s = ReviewStore(db)
    s.add(
        [
            turn("hiya pal", "greet"),
            turn("is the shop open on boxing day", "oos", reasons=("out_of_scope",)),
            turn("asdfgh", "oos", reasons=("out_of_scope",)),
        ]
    )
    s.close()
    review = ["review", "--db", db]
    assert parlance([*review, "counts"]) == 0
    out = capsys.readouterr().out
    assert "oos" in out and "2 new" in out

    assert parlance([*review, "list", "--intent", "oos"]) == 0
    listed = capsys.readouterr().out
    assert "is the shop open on boxing day" in listed and "hiya pal" not in listed

    assert parlance([*review, "accept", "1"]) == 0
    assert parlance([*review, "relabel", "opening_hours", "2", "--pack", str(bike_pack)]) == 0
    assert parlance([*review, "discard", "3"]) == 0
    capsys.readouterr()
    assert parlance([*review, "relabel", "teleport", "3", "--pack", str(bike_pack)]) == 1
    assert "not a label of pack" in capsys.readouterr().err

    assert parlance([*review, "export", str(bike_pack), "--dry-run"]) == 0
    held = sum(held_out(t, 0.2) for t in ("hiya pal", "is the shop open on boxing day"))
    assert f"would add {2 - held} example(s) and {held} held-out" in capsys.readouterr().out
    assert not (bike_pack / "reviewed.yml").exists()
    assert parlance([*review, "export", str(bike_pack), "--test-share", "0"]) == 0
    out = capsys.readouterr().out
    assert "added 2 example(s) and 0 held-out test(s)" in out
    written = yaml.safe_load((bike_pack / "reviewed.yml").read_text())
    assert written["intents"]["greet"]["examples"] == ["hiya pal"]
    assert written["intents"]["opening_hours"]["examples"] == ["is the shop open on boxing day"]
    assert parlance([*review, "list", "--status", "exported"]) == 0
    assert capsys.readouterr().out.count("exported") == 2
    assert parlance(["validate", str(bike_pack)]) == 0

    assert parlance(["review", "--db", str(tmp_path / "none.db"), "list"]) == 1
    assert "no review inbox" in capsys.readouterr().err
