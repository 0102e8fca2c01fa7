"""pycni.background: a function beside the caller's steps, or after them."""

from __future__ import annotations

import _thread

import pytest

from pycni import background, linger


def test_a_thread_runs_it_beside_the_caller() -> None:
    seen: list[int] = []
    job = background.Background(lambda: seen.append(_thread.get_ident()) or "done")
    assert job.join() == "done"
    assert seen and seen[0] != _thread.get_ident()


def test_deferred_runs_it_in_join_after_the_callers_steps() -> None:
    order: list[str] = []
    job = background.Background(lambda: order.append("links") or 7, deferred=True)
    order.append("firewall")
    assert job.join() == 7
    assert order == ["firewall", "links"]
    assert job.join() == 7  # a second join does not run it again
    assert order == ["firewall", "links"]


def test_join_raises_what_the_function_raised_either_way() -> None:
    def fail() -> None:
        raise ValueError("boom")

    for deferred in (False, True):
        with pytest.raises(ValueError, match="boom"):
            background.Background(fail, deferred=deferred).join()


@pytest.mark.parametrize(("mode", "threaded"), [("thread", True), ("process", False)])
def test_teardown_overlaps_only_where_the_removal_waits_in_a_thread(
    monkeypatch: pytest.MonkeyPatch, mode: str, threaded: bool
) -> None:
    """In the agent's workers (MODE "thread") beside the caller; in a short-lived
    process, whose link removal forks a child, after the caller's steps."""
    monkeypatch.setattr(linger, "MODE", mode)
    where: list[int] = []
    background.for_teardown(lambda: where.append(_thread.get_ident())).join()
    assert (where[0] != _thread.get_ident()) is threaded
