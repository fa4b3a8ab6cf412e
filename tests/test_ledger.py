"""The scheduler alone: pure decisions, no awaits, no driver."""

from __future__ import annotations

from rolling import Pause
from rolling._ledger import Barrier, Ledger, Mode


def window(
    n: int,
    *,
    floor: int,
    ceiling: int,
    surge: bool = False,
    in_place: bool = True,
    unserving: frozenset[int] = frozenset(),
    barriers: tuple[Barrier, ...] = (),
) -> Ledger:
    serving = [i not in unserving for i in range(n)]
    return Ledger(
        serving_at_start=serving,
        lockstep=False,
        floor=floor,
        ceiling=ceiling,
        serving=sum(serving),
        existing=n,
        cap=max(1, (n - floor) + (ceiling - n)),
        surge=surge,
        in_place=in_place,
        barriers=barriers,
    )


def test_sliding_window_starts_up_to_max_unavailable_then_one_per_completion() -> None:
    sched = window(10, floor=8, ceiling=10)
    first = sched.poll()
    assert [s.index for s in first.starts] == [0, 1]
    assert all(s.mode is Mode.IN_PLACE for s in first.starts)
    assert sched.poll().starts == ()
    sched.settle(serving=1, existing=0)
    assert [s.index for s in sched.poll().starts] == [2]


def test_surge_launches_first_and_never_passes_the_ceiling() -> None:
    sched = window(4, floor=4, ceiling=5, surge=True, in_place=False)
    poll = sched.poll()
    assert [(s.index, s.mode) for s in poll.starts] == [(0, Mode.SURGE)]
    assert sched.existing == 5
    assert sched.poll().starts == ()
    sched.settle(serving=0, existing=-1)  # old instance terminated
    assert [s.index for s in sched.poll().starts] == [1]


def test_surge_and_unavailability_together_like_kubernetes_defaults() -> None:
    sched = window(4, floor=3, ceiling=5, surge=True, in_place=False)
    modes = [s.mode for s in sched.poll().starts]
    assert modes == [Mode.SURGE, Mode.TAKE_OUT]


def test_unserving_instances_go_without_using_the_budget() -> None:
    sched = window(5, floor=4, ceiling=5, unserving=frozenset({0, 1}))
    sched.serving = 3  # two of five are unhealthy: the fleet starts below the floor
    poll = sched.poll()
    assert [s.index for s in poll.starts] == [0]  # cap is 1, and unit 1 is next
    sched.settle(serving=1, existing=0)
    assert [s.index for s in sched.poll().starts] == [1]
    sched.settle(serving=1, existing=0)
    # Now 5 serve and the floor is 4: one healthy instance may go.
    assert [s.index for s in sched.poll().starts] == [2]


def test_a_fleet_below_its_floor_with_nothing_to_fix_is_stuck() -> None:
    sched = window(3, floor=3, ceiling=3)
    sched.serving = 2
    poll = sched.poll()
    assert poll.stuck
    assert not poll.starts


def test_barriers_hold_work_until_in_flight_drains_and_report_steps() -> None:
    step = Pause(5)
    sched = window(6, floor=3, ceiling=6, barriers=(Barrier(position=2, steps=(step,)),))
    assert [s.index for s in sched.poll().starts] == [0, 1]
    assert sched.poll().starts == ()
    for _ in range(2):
        sched.settle(serving=1, existing=0)
    poll = sched.poll()
    assert poll.barrier is not None
    assert poll.barrier.steps == (step,)
    assert sched.poll().barrier is poll.barrier  # reported until passed
    sched.pass_barrier()
    assert [s.index for s in sched.poll().starts] == [2, 3, 4]


def test_lockstep_starts_a_whole_batch_then_waits() -> None:
    sched = Ledger(
        serving_at_start=[True] * 5,
        lockstep=True,
        floor=0,
        ceiling=5,
        serving=5,
        existing=5,
        cap=3,
        surge=False,
        in_place=True,
        barriers=[Barrier(position=3, batch=0), Barrier(position=5, batch=1)],
    )
    assert [s.index for s in sched.poll().starts] == [0, 1, 2]
    for _ in range(3):
        sched.settle(serving=0, existing=0)
    assert sched.poll().barrier == Barrier(position=3, batch=0)
    sched.pass_barrier()
    assert [s.index for s in sched.poll().starts] == [3, 4]
    sched.settle(serving=0, existing=0)
    sched.settle(serving=0, existing=0)
    assert sched.poll().barrier == Barrier(position=5, batch=1)
    sched.pass_barrier()
    assert sched.poll().done


def test_pause_and_stop() -> None:
    sched = window(4, floor=2, ceiling=4)
    sched.paused = True
    assert sched.poll().starts == ()
    assert not sched.poll().stuck  # paused is not stuck
    sched.paused = False
    assert len(sched.poll().starts) == 2
    sched.stop()
    assert not sched.poll().done
    sched.settle(serving=0, existing=0)
    sched.settle(serving=0, existing=0)
    assert sched.poll().done
    assert sched.cursor == 2


def test_empty_plan_is_done_at_once() -> None:
    assert window(0, floor=0, ceiling=0).poll().done
