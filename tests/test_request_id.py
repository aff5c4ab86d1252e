"""Generated request ids (services/common/request_id.py): unique within a process and across
forked workers, which inherit the parent's generator state unless Python reseeds it."""

from __future__ import annotations

import multiprocessing
import re

from services.common.request_id import new_request_id


def _ids_in_child(queue) -> None:
    queue.put([new_request_id(None) for _ in range(100)])


def test_generated_ids_are_unique_across_forked_workers():
    new_request_id(None)  # the parent draws before forking, as a serving process would
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_ids_in_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    drawn = [queue.get(timeout=30) for _ in children] + [[new_request_id(None) for _ in range(100)]]
    for child in children:
        child.join(timeout=30)
    every = [rid for ids in drawn for rid in ids]
    assert len(set(every)) == len(every) == 300
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in every)


def test_a_valid_incoming_id_is_kept_and_a_hostile_one_replaced():
    assert new_request_id("trace-1234.abc:5") == "trace-1234.abc:5"
    replaced = new_request_id("evil\nINFO forged log line")
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)
