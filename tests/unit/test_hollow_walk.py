"""How a hollow node walks its tasks (the part of swarmd hollow that needs no manager)."""
import argparse

import pytest

from flotilla.proto import objects_pb2 as pb
from flotilla.swarmd.hollow import HollowConfig, HollowNode, _TaskSim
from flotilla.swarmd.hollow_cmd import parse_label, parse_size


def _node(step=0.0, tick=0.1) -> HollowNode:
    n = HollowNode.__new__(HollowNode)
    n.config = HollowConfig(manager="unused", step=step, tick=tick)
    return n


def _sim(*env, desired=pb.RUNNING) -> _TaskSim:
    t = pb.Task(id="t", desired_state=desired)
    t.spec.container.env.extend(env)
    return _TaskSim(t, next_at=100.0)


def test_walks_to_running_at_once_without_step():
    sim = _sim()
    _node()._advance(sim, 100.0)
    assert sim.state == pb.RUNNING


def test_walks_one_state_per_step():
    node, sim = _node(step=1.0), _sim()
    seen = []
    for now in (100.0, 101.0, 102.0, 103.0, 104.0, 110.0):
        node._advance(sim, now)
        seen.append(sim.state)
    assert seen == [pb.ACCEPTED, pb.PREPARING, pb.READY, pb.STARTING, pb.RUNNING, pb.RUNNING]


def test_exit_code_fails_after_running_was_seen():
    node, sim = _node(tick=0.1), _sim("HOLLOW_EXIT=3")
    node._advance(sim, 100.0)
    assert sim.state == pb.RUNNING
    node._advance(sim, 100.2)
    assert sim.state == pb.FAILED and node._status(sim).container_status.exit_code == 3


def test_exit_zero_completes_and_reject_rejects():
    node = _node()
    done = _sim("HOLLOW_EXIT=0")
    node._advance(done, 100.0)
    node._advance(done, 101.0)
    assert done.state == pb.COMPLETE
    rejected = _sim("HOLLOW_REJECT=1")
    node._advance(rejected, 100.0)
    assert rejected.state == pb.REJECTED


def test_desired_shutdown_stops_the_task():
    node, sim = _node(), _sim()
    node._advance(sim, 100.0)
    sim.task.desired_state = pb.SHUTDOWN
    node._advance(sim, 101.0)
    assert sim.state == pb.SHUTDOWN


def test_sizes_and_labels():
    assert parse_size("8G") == 8 << 30 and parse_size("512m") == 512 << 20 and parse_size("1000") == 1000
    assert parse_label("zone=a") == ("zone", "a")
    with pytest.raises(argparse.ArgumentTypeError, match="key=value"):
        parse_label("zone")
