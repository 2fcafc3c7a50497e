"""The fair queue, the results store and the client identity, without a server."""

import json
import random

import pytest

from gambar.server.jobs import Job, JobSpec, is_job_id, new_job_id
from gambar.server.queue import FairQueue, QueueFull
from gambar.server.store import ResultStore


def test_round_robin_between_clients():
    q = FairQueue(capacity=100, per_client=100)
    for k in range(5):
        q.push("hog", f"h{k}")
    q.push("small", "s0")
    q.push("other", "o0")
    q.push("other", "o1")
    served = [q.pop() for _ in range(len(q))]
    # The hog's five jobs do not delay the others: one job per client per turn.
    assert served == ["h0", "s0", "o0", "h1", "o1", "h2", "h3", "h4"]
    assert q.pop() is None


def test_late_client_waits_one_turn_not_the_whole_backlog():
    q = FairQueue(capacity=100, per_client=100)
    for k in range(20):
        q.push("hog", f"h{k}")
    assert q.pop() == "h0"
    q.push("late", "l0")
    assert q.position("late", "l0") == 2  # after the hog's next job only
    assert [q.pop(), q.pop()] == ["h1", "l0"]


def test_positions_match_the_serving_order():
    rng = random.Random(0)
    q = FairQueue(capacity=1000, per_client=1000)
    items = []
    for k in range(200):
        client = f"c{rng.randrange(7)}"
        q.push(client, f"{client}-{k}")
        items.append((client, f"{client}-{k}"))
        if rng.random() < 0.2:
            q.pop()
    order = q.order()
    for client, item in items:
        pos = q.position(client, item)
        if pos is not None:
            assert order[pos - 1] == item
    assert [q.pop() for _ in range(len(q))] == order


def test_addresses_take_turns_before_the_ids_within_them():
    q = FairQueue(capacity=100, per_client=100)
    for k in range(3):  # one address, three rotating ids, two jobs each
        for n in range(2):
            q.push(f"hog/id:{k}", f"h{k}.{n}", group="hog")
    q.push("other", "o0", group="other")
    q.push("other", "o1", group="other")
    # One turn per address; the hog's ids share the hog's turns.
    assert q.order() == ["h0.0", "o0", "h1.0", "o1", "h2.0", "h0.1", "h1.1", "h2.1"]
    assert q.position("other", "o0") == 2 and q.position("hog/id:2", "h2.0") == 5
    assert [q.pop() for _ in range(len(q))] == [
        "h0.0", "o0", "h1.0", "o1", "h2.0", "h0.1", "h1.1", "h2.1"]


def test_positions_match_the_serving_order_with_groups():
    rng = random.Random(1)
    q = FairQueue(capacity=1000, per_client=1000)
    items = []
    for k in range(300):
        group = f"g{rng.randrange(3)}"
        client = f"{group}/c{rng.randrange(3)}"
        q.push(client, k, group=group)
        items.append((client, k))
        if rng.random() < 0.2:
            q.pop()
        if rng.random() < 0.1:
            victim = items[rng.randrange(len(items))]
            q.remove(*victim)
    order = q.order()
    assert [q.position(c, i) for c, i in items if q.position(c, i)] == [
        order.index(i) + 1 for c, i in items if i in order]
    assert [q.pop() for _ in range(len(q))] == order and q.pop() is None


def test_an_address_share_bounds_all_its_ids():
    q = FairQueue(capacity=100, per_client=2)
    q.push("a/id:1", 1, group="a")
    q.push("a/id:2", 2, group="a")
    with pytest.raises(QueueFull, match="per address"):
        q.push("a/id:3", 3, group="a")
    q.push("b", 4, group="b")  # another address still gets in
    assert q.queued_by_group("a") == 2 and len(q) == 3


def test_restored_items_bypass_the_bounds_and_a_running_one_goes_first():
    q = FairQueue(capacity=1, per_client=1)
    q.restore("a", "a1", group="g")
    q.restore("b", "b1", group="h")
    q.restore("a", "a2", group="g")
    q.restore("b", "b0", group="h", first=True)  # it was running when the server stopped
    assert q.order() == ["b0", "a1", "b1", "a2"] and len(q) == 4
    with pytest.raises(QueueFull):
        q.push("c", "c1")


def test_bounds_and_remove():
    q = FairQueue(capacity=3, per_client=2)
    q.push("a", 1)
    q.push("a", 2)
    with pytest.raises(QueueFull, match="per client"):
        q.push("a", 3)
    q.push("b", 4)
    with pytest.raises(QueueFull, match="queue is full"):
        q.push("c", 5)
    assert q.remove("a", 1) and not q.remove("a", 1)
    assert q.position("a", 2) == 1 and q.position("b", 4) == 2
    assert q.remove("a", 2) and q.order() == [4] and len(q) == 1


def test_job_ids_are_random_and_validated():
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(is_job_id(i) for i in ids)
    for bad in ("../../etc/passwd", "A" * 32, "0" * 31, "0" * 33, "", "0" * 31 + "/"):
        assert not is_job_id(bad)


def _record(job_id, finished):
    spec = JobSpec(model="m", prompt="p", seeds=(1,), options={"steps": 2, "size": 32})
    job = Job(id=job_id, client="c", spec=spec, finished=finished)
    return job.record()


def test_store_expires_and_keeps_under_its_size_limit(tmp_path):
    store = ResultStore(tmp_path, keep_s=100, max_bytes=1 << 30)
    ids = [new_job_id() for _ in range(4)]
    for k, job_id in enumerate(ids):
        store.write_image(job_id, 0, b"x" * 1000)
        store.write_record(job_id, _record(job_id, 1000.0 + k), finished=1000.0 + k)
    each = store.total_bytes() / 4
    store.max_bytes = int(2.5 * each)
    # Over the limit: the oldest go first, but a protected (unfinished) job is never removed.
    assert store.sweep(now=1010.0, keep=[ids[0]]) == [ids[1], ids[2]]
    assert store.image_path(ids[3], 0) is not None and store.total_bytes() <= 2.5 * each
    assert not (tmp_path / ids[1]).exists()
    # Past keep_s everything unprotected goes.
    assert store.sweep(now=5000.0) == [ids[0], ids[3]]
    assert store.image_path(ids[3], 0) is None and not store.total_bytes()


def test_store_reloads_finished_jobs_and_ignores_foreign_files(tmp_path):
    store = ResultStore(tmp_path, keep_s=1e9, max_bytes=1 << 30)
    job_id = new_job_id()
    store.write_image(job_id, 0, b"png")
    store.write_record(job_id, _record(job_id, 5.0), finished=5.0)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / new_job_id()).mkdir()  # a crash before its record: removed on reload
    again = ResultStore(tmp_path, keep_s=1e9, max_bytes=1 << 30)
    records = again.load_records()
    assert [r["id"] for r in records] == [job_id]
    assert Job.from_record(records[0]).spec.seeds == (1,)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([job_id, "notes.txt"])


def test_store_builds_no_path_from_outside_input(tmp_path):
    store = ResultStore(tmp_path / "results", keep_s=1, max_bytes=1)
    (tmp_path / "secret.png").write_bytes(b"secret")
    for bad in ("..", "../secret", "/etc", "0" * 31 + "."):
        assert store.image_path(bad, 0) is None
        with pytest.raises(ValueError):
            store.write_image(bad, 0, b"x")
    assert store.image_path(new_job_id(), -1) is None


def test_job_records_round_trip_and_old_flat_records_fold_into_options():
    spec = JobSpec(model="m", prompt="p", seeds=(5, 6), options={"size": 16},
                   inputs={"layout": []}, output_size=64)
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.settings() == {"model": "m", "prompt": "p", "n": 2, "seed": 5, "seeds": [5, 6],
                               "output_size": 64, "inputs": ["layout"], "size": 16}
    # A record written before options were one dict (flat diffusion keys beside the prompt).
    old = {"id": new_job_id(), "client": "c", "state": "done", "created": 1.0, "started": 1.0,
           "finished": 2.0, "error": None, "images": [],
           "spec": {"model": "tiny", "prompt": "p", "negative_prompt": "", "seeds": [3],
                    "steps": 20, "guidance": 2.0, "sampler": "ddim", "size": 32,
                    "output_size": 512, "eta": None, "n": 1, "seed": 3}}
    job = Job.from_record(old)
    assert job.spec.options == {"negative_prompt": "", "steps": 20, "guidance": 2.0,
                                "sampler": "ddim", "size": 32}
    assert (job.spec.inputs, job.spec.output_size, job.spec.seeds) == ({}, 512, (3,))
