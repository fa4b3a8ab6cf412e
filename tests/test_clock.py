import anyio
import pytest

pytestmark = pytest.mark.anyio


async def test_an_hour_of_sleeping_takes_no_real_time() -> None:
    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for hours in range(5):
            tg.start_soon(anyio.sleep, 3600 * hours)
    assert anyio.current_time() - start == pytest.approx(4 * 3600)


async def test_timeouts_fire_in_virtual_time() -> None:
    with anyio.move_on_after(5) as scope:
        await anyio.sleep(10)
    assert scope.cancelled_caught
    with anyio.fail_after(10):
        await anyio.sleep(5)


async def test_cancelled_timers_do_not_move_the_clock() -> None:
    start = anyio.current_time()
    with anyio.move_on_after(1):
        await anyio.sleep(1000)  # its timer is cancelled at t=1
    await anyio.sleep(2)
    assert anyio.current_time() - start == pytest.approx(3)
