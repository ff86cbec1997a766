from utils.redis_queue import RedisTaskQueue, TaskPriority


async def test_enqueue_dequeue_complete_round_trip(queue: RedisTaskQueue) -> None:
    await queue.enqueue("t1", "dev", {"file": "main.py"}, TaskPriority.HIGH)
    task = await queue.dequeue("w1", timeout=1)
    assert task is not None and task.task_id == "t1"
    await queue.complete_task(task.task_id, {"ok": True})
    assert await queue.wait_for_result("t1", timeout=1) == {"ok": True}
