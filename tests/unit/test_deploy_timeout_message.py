"""A rollout that times out says where its tasks stand, not an early event's stale message."""

from __future__ import annotations

from nbops.deploy import Rollout, RolloutEvent, _last_error


def _task(state: str) -> dict:
    return {"task": "t" * 25, "slot": 1, "state": state, "desired": "running"}


def test_timeout_names_the_states_the_tasks_are_stuck_in():
    # the engine's first event for every task is "pending task scheduling": it must not be the message
    early = RolloutEvent(ts=1.0, service="s", task="x" * 25, slot=1, node="n", image="i", state="pending",
                         health=None, message="pending task scheduling")
    r = Rollout(outcome="timeout", events=[early], tasks=[_task("running")] * 2 + [_task("preparing")] * 3)
    msg = _last_error(r)
    assert msg == "2/5 tasks running, 3 preparing (pulling the image, creating the container)"
    assert "scheduling" not in msg


def test_timeout_adds_the_last_failure():
    failed = {"ts": 2.0, "task": "abcdefabcdefabcdef", "slot": 1, "node": "n", "image": "i", "state": "rejected",
              "error": "No such image: app:1"}
    r = Rollout(outcome="timeout", events=[], tasks=[_task("pending")], failed_tasks=[failed])
    assert _last_error(r) == ("0/1 tasks running, 1 pending (not scheduled yet); "
                              "last failure: task abcdefabcdef rejected: No such image: app:1")


def test_other_outcomes_keep_the_failed_task_message():
    failed = {"ts": 2.0, "task": "abcdefabcdefabcdef", "slot": 1, "node": "n", "image": "i", "state": "failed",
              "error": "task: non-zero exit (1)"}
    r = Rollout(outcome="failing", events=[], tasks=[_task("running")], failed_tasks=[failed])
    assert _last_error(r) == "task abcdefabcdef failed: task: non-zero exit (1)"
