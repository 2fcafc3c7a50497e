"""A bounded load test on 127.0.0.x: 20 concurrent clients, 100 jobs, tiny model, 2 steps.

Each client connects from its own loopback address, as 20 machines would (the queue's shares
and turns go per address).

No job may be lost or run twice, and completion must be fair (round-robin between clients).
"""

import json
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers_server import (  # noqa: F401
    Proxy,
    client_from,
    live_server,
    need,
    png_provenance,
    served_models,
)

need("fastapi")
httpx = need("httpx")

CLIENTS, JOBS_EACH = 20, 5
PROMPTS = ["a red circle", "three blue stars", "sebuah lingkaran merah", "dua bintang biru"]
POLL_S = 0.2  # 20 clients polling faster only compete with the worker for the GIL


class Counting(Proxy):
    """Wraps a pipeline and counts how often each seed is drawn."""

    def __init__(self, pipe):
        super().__init__(pipe)
        self.drawn: Counter = Counter()
        self._lock = threading.Lock()

    def generate(self, prompts, *, seeds, **options):
        with self._lock:
            self.drawn.update(seeds)
        return self.pipe.generate(prompts, seeds=seeds, **options)


def run_client(url, k, start):
    """Submit JOBS_EACH jobs as client k (from its own address), wait for all, check them."""
    with client_from(url, f"127.0.0.{k + 2}", headers={"X-Client-Id": f"client-{k:02d}"},
                     timeout=60) as c:
        start.wait()
        ids = []
        for j in range(JOBS_EACH):
            body = {"prompt": PROMPTS[(k + j) % 4], "seed": 1000 * k + j, "steps": 2}
            r = c.post("/api/jobs", json=body)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        jobs = {}
        while len(jobs) < len(ids):
            for job_id in ids:
                if job_id not in jobs:
                    job = c.get(f"/api/jobs/{job_id}").json()
                    if job["state"] in ("done", "failed", "cancelled"):
                        jobs[job_id] = job
            time.sleep(POLL_S)
        for j, job_id in enumerate(ids):
            job = jobs[job_id]
            assert job["state"] == "done", job
            (image,) = job["images"]
            _, prov = png_provenance(c.get(image["url"]).content)
            assert (prov["seed"], prov["prompt"]) == (1000 * k + j, PROMPTS[(k + j) % 4])
        listed = {j["id"] for j in c.get("/api/jobs").json()["jobs"]}
        assert set(ids) <= listed  # (the same client ids are reused across rounds)
        return [dict(jobs[i], client=k, order=n) for n, i in enumerate(ids)]


def max_overtaking(jobs):
    """Most turns any client got while another client's job waited, beyond round-robin's one.

    For job J of client B waiting from `created` to `started`: if B itself had k jobs started in
    that window, round-robin lets any other client start at most k + 1. Returns the largest
    (other's starts) - (B's starts) seen; 1 means perfectly fair.
    """
    worst = 0
    for j in jobs:
        counts = Counter(o["client"] for o in jobs
                         if j["created"] < o["started"] < j["started"])
        own = counts.pop(j["client"], 0)
        worst = max([worst, *(n - own for n in counts.values())])
    return worst


def load_round(url, service, counting, paused):
    """One round: CLIENTS threads submit JOBS_EACH jobs each at once; returns their jobs."""
    counting.drawn.clear()
    before = service.jobs_run
    start = threading.Event()
    if paused:
        service.pause()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(run_client, url, k, start) for k in range(CLIENTS)]
        start.set()
        if paused:
            while service.queue_length() < CLIENTS * JOBS_EACH:
                time.sleep(0.01)
            service.resume()
        jobs = [j for f in futures for j in f.result()]
    elapsed = time.perf_counter() - t0
    # Nothing lost, nothing run twice.
    assert len(jobs) == len({j["id"] for j in jobs}) == CLIENTS * JOBS_EACH
    assert service.jobs_run - before == CLIENTS * JOBS_EACH
    assert len(counting.drawn) == CLIENTS * JOBS_EACH and set(counting.drawn.values()) == {1}
    return jobs, elapsed


@pytest.mark.slow
def test_load_20_clients_100_jobs_fair_and_nothing_lost(served_models, tmp_path,  # noqa: F811
                                                        capsys):
    counting = Counting(served_models["tiny"])
    with live_server({"tiny": counting}, tmp_path, queue_size=CLIENTS * JOBS_EACH,
                     per_client=JOBS_EACH) as srv:
        # 1. Everything queued before the first job starts: completion must go in exact rounds.
        jobs, queued_s = load_round(srv.url, srv.service, counting, paused=True)
        order = sorted(jobs, key=lambda j: j["finished"])
        for r in range(JOBS_EACH):
            rnd = order[r * CLIENTS:(r + 1) * CLIENTS]
            assert sorted(j["client"] for j in rnd) == list(range(CLIENTS)), f"round {r}"
            assert {j["order"] for j in rnd} == {r}  # each client's jobs in its own order
        # 2. Clients arriving as they will, the worker running throughout.
        live, live_s = load_round(srv.url, srv.service, counting, paused=False)
        overtaking = max_overtaking(live)
        assert overtaking <= 1
    waits = {k: statistics.mean(j["finished"] - j["created"] for j in live if j["client"] == k)
             for k in range(CLIENTS)}
    summary = {
        "clients": CLIENTS, "jobs_per_round": CLIENTS * JOBS_EACH,
        "queued_round_s": round(queued_s, 2), "live_round_s": round(live_s, 2),
        "live_jobs_per_s": round(CLIENTS * JOBS_EACH / live_s, 1),
        "live_max_overtaking": overtaking,
        "live_mean_wait_s_min_max": [round(min(waits.values()), 3),
                                     round(max(waits.values()), 3)],
    }
    (tmp_path / "load.json").write_text(json.dumps(summary, indent=1))
    with capsys.disabled():
        print(f"\nload test: {json.dumps(summary)}")
