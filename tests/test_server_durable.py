"""The job queue survives its server: jobs are journalled (SQLite, WAL) before they are
acknowledged, and a server stopped by SIGTERM or killed with kill -9 runs them again when it
restarts on the same results folder: none lost, none run twice, the same pixels."""

import signal
import sqlite3
import threading
import time

import numpy as np
import pytest

from helpers_server import (  # noqa: F401
    Proxy,
    live_server,
    need,
    png_provenance,
    served_models,
    start_serve,
    wait_done,
)

need("fastapi")
httpx = need("httpx")

from gambar.errors import CorruptFileError, InvalidInputError  # noqa: E402
from gambar.server.jobs import State, new_job_id  # noqa: E402
from gambar.server.journal import JOURNAL  # noqa: E402
from gambar.server.service import JobService  # noqa: E402
from gambar.server.settings import ServerSettings  # noqa: E402

A, A_ = "addr:10.0.0.1/id:a", "addr:10.0.0.1/id:b"  # two ids of one address
C = "addr:10.0.0.2"


class Gated(Proxy):
    """A pipeline whose first step waits for `release`, so a job can be caught running."""

    def __init__(self, pipe):
        super().__init__(pipe)
        self.running, self.release = threading.Event(), threading.Event()

    def generate(self, prompts, *, progress, **options):
        def gate(done, total):
            if not self.running.is_set():
                self.running.set()
                assert self.release.wait(30)
            progress(done, total)

        return self.pipe.generate(prompts, progress=gate, **options)


def service(pipelines, results, **settings):
    return JobService(pipelines, ServerSettings(results_dir=results, **settings))


def spec(svc, seed, steps=3):
    return svc.make_spec(prompt="a red circle", seed=seed, options={"steps": steps})


def test_a_job_is_journalled_before_submit_returns(served_models, tmp_path):  # noqa: F811
    svc = service(served_models, tmp_path)
    svc.pause()
    svc.start()
    try:
        job = svc.submit(A, spec(svc, 5))
        # Another connection (another process would do the same) sees it at once.
        with sqlite3.connect(tmp_path / JOURNAL) as db:
            rows = db.execute("SELECT id, client FROM jobs").fetchall()
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        assert rows == [(job.id, A)] and mode == "wal"
    finally:
        svc.stop()


def test_stop_keeps_jobs_and_a_restart_runs_them_running_first_then_fairly(
        served_models, tmp_path):  # noqa: F811
    gated = Gated(served_models["tiny"])
    first = service({"tiny": gated}, tmp_path)
    first.start()
    running = first.submit(A, spec(first, 1, steps=20))
    assert gated.running.wait(30)
    a2, a3 = first.submit(A, spec(first, 2)), first.submit(A, spec(first, 3))
    b1, c1 = first.submit(A_, spec(first, 4)), first.submit(C, spec(first, 5))
    stopper = threading.Thread(target=first.stop)
    stopper.start()  # what SIGTERM does: the running job stops at its next step
    deadline = time.monotonic() + 30
    while not first._stopping and time.monotonic() < deadline:  # stop() has begun: release
        time.sleep(0.01)
    gated.release.set()
    stopper.join(30)
    # Nothing was recorded as cancelled: the jobs are left for the next server.
    assert not list(p for p in tmp_path.iterdir() if p.is_dir())
    assert first.get(running.id).state == State.QUEUED

    again = service(served_models, tmp_path)
    again.pause()
    again.start()
    try:
        ids = [running.id, c1.id, b1.id, a2.id, a3.id]
        # The job that was running goes first and counts as its address's turn; then turns
        # alternate between addresses, and the ids of one address share its turns.
        assert [again.position(again.get(i)) for i in ids] == [1, 2, 3, 4, 5]
        assert again.get(a2.id).created == a2.created  # the original submission time
        again.resume()
        deadline = time.monotonic() + 60
        while not all(again.get(i).state in (State.DONE, State.FAILED) for i in ids):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [again.get(i).state for i in ids] == [State.DONE] * 5
        assert again.jobs_run == 5
        order = sorted(ids, key=lambda i: again.get(i).started)
        assert order == ids
        # Same seed, same pixels as drawn alone.
        job = again.get(running.id)
        path = again.store.image_path(job.id, 0)
        image, prov = png_provenance(path.read_bytes())
        alone = served_models["tiny"].generate(["a red circle"], seeds=[1], steps=20,
                                               progress=False)[0].image
        assert prov["seed"] == 1 and np.array_equal(np.asarray(image), np.asarray(alone))
    finally:
        again.stop()
    with sqlite3.connect(tmp_path / JOURNAL) as db:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)


def test_a_finished_job_is_not_run_again(served_models, tmp_path):  # noqa: F811
    svc = service(served_models, tmp_path)
    svc.start()
    job = svc.submit(A, spec(svc, 9))
    assert job.done.wait(30) and job.state == State.DONE
    # A crash after the job's record was written but before its journal row went.
    svc.journal.add(job.id, A, job.spec.to_dict(), job.created)
    svc.stop()
    again = service(served_models, tmp_path)
    again.start()
    try:
        assert again.get(job.id).state == State.DONE and again.get(job.id).finished == job.finished
        time.sleep(0.2)
        assert again.jobs_run == 0 and again.queue_length() == 0
    finally:
        again.stop()


def test_a_job_journalled_in_the_old_flat_format_runs_with_its_options(
        served_models, tmp_path):  # noqa: F811
    """Journals written before options were one dict keep working after an upgrade."""
    old = {"model": "tiny", "prompt": "a red circle", "negative_prompt": "blue", "seeds": [4],
           "steps": 3, "guidance": 2.5, "sampler": "ddim", "size": 32, "output_size": None,
           "eta": None, "n": 1, "seed": 4}
    svc = service(served_models, tmp_path)
    job_id = new_job_id()
    svc.journal.add(job_id, A, old, time.time())
    svc.start()
    try:
        job = svc.get(job_id)
        assert job.done.wait(30) and job.state == State.DONE, job.error
        assert job.spec.options == {"negative_prompt": "blue", "steps": 3, "guidance": 2.5,
                                    "sampler": "ddim", "size": 32}
        image, prov = png_provenance(svc.store.image_path(job_id, 0).read_bytes())
    finally:
        svc.stop()
    alone = served_models["tiny"].generate(["a red circle"], seeds=[4], steps=3, guidance=2.5,
                                           sampler="ddim", negative_prompt="blue",
                                           progress=False)[0]
    assert (prov["steps"], prov["negative_prompt"]) == (3, "blue")
    assert np.array_equal(np.asarray(image), np.asarray(alone.image))


def test_a_job_whose_model_is_gone_fails_with_a_reason(served_models, tmp_path):  # noqa: F811
    svc = service(served_models, tmp_path)
    svc.pause()
    svc.start()
    job = svc.submit(A, spec(svc, 3))
    svc.stop()
    renamed = service({"other": served_models["tiny"]}, tmp_path)
    renamed.start()
    try:
        lost = renamed.get(job.id)
        assert lost.state == State.FAILED and "without the model 'tiny'" in lost.error
    finally:
        renamed.stop()


def test_one_server_per_results_folder_and_a_corrupt_journal(served_models, tmp_path):  # noqa: F811
    svc = service(served_models, tmp_path / "a")
    with pytest.raises(InvalidInputError, match="another gambar server is using"):
        service(served_models, tmp_path / "a")
    svc.start()
    svc.stop()
    service(served_models, tmp_path / "a").journal.close()  # released by stop()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / JOURNAL).write_bytes(b"not a database" * 100)
    with pytest.raises(CorruptFileError, match="move it away") as err:
        service(served_models, tmp_path / "b")
    assert "\n" not in str(err.value)


def _states(c, ids):
    return {i: c.get(f"/api/jobs/{i}").json() for i in ids}


def _wait_all(c, ids, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        jobs = _states(c, ids)
        if all(j["state"] in ("done", "failed", "cancelled") for j in jobs.values()):
            return jobs
        assert time.monotonic() < deadline, jobs
        time.sleep(0.05)


def _wait_for(c, ids, ready, timeout=120):
    """Poll until ready(states) holds; the states it held for."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = _states(c, ids)
        if ready(jobs):
            return jobs
        assert time.monotonic() < deadline, jobs
        time.sleep(0.01)


def _count(jobs, state):
    return sum(j["state"] == state for j in jobs.values())


@pytest.mark.slow
def test_kill_9_and_sigterm_mid_queue_lose_and_repeat_nothing(tiny_model_dir, tmp_path,
                                                              capsys):
    """The issue's reproduction: acknowledged jobs answered 404 after kill -9 and a restart."""
    import gambar

    steps = 100  # about a second a job: time to catch one running and others queued
    args = ["--model", str(tiny_model_dir), "--results", str(tmp_path / "results")]
    bodies = [({"X-Client-Id": f"c{k % 2}"},
               {"prompt": ["a red circle", "three blue stars"][k % 2], "seed": 100 + 10 * k,
                "n": 1 + k % 2, "steps": steps, "sampler": "ddim", "guidance": 3.0})
              for k in range(6)]
    proc, url = start_serve(args)
    try:
        with httpx.Client(base_url=url) as c:
            acked = {}
            for headers, body in bodies:
                r = c.post("/api/jobs", json=body, headers=headers)
                assert r.status_code == 202, r.text
                acked[r.json()["id"]] = body
            ids = list(acked)
            at_kill = _wait_for(c, ids, lambda js: _count(js, "done") >= 1
                                and _count(js, "running") == 1)
            proc.kill()  # SIGKILL: no shutdown code runs
            t_kill = time.time()
        proc.communicate(timeout=30)

        proc, url = start_serve(args)
        with httpx.Client(base_url=url) as c:
            jobs = _states(c, ids)
            assert all(j["state"] in ("queued", "running", "done") for j in jobs.values())
            at_term = _wait_for(c, ids, lambda js: any(
                j["state"] == "done" and j["finished"] > t_kill for j in js.values())
                and _count(js, "running") == 1)
            proc.send_signal(signal.SIGTERM)  # graceful: the running job is put back
            _, err = proc.communicate(timeout=60)
            # uvicorn shuts down gracefully, then re-raises the signal to exit with it.
            assert proc.returncode in (0, -signal.SIGTERM), err.decode()
            assert "Traceback" not in err.decode(), err.decode()
            t_term = time.time()

        proc, url = start_serve(args)
        with httpx.Client(base_url=url) as c:
            final = _wait_all(c, ids)
            ran_last = c.get("/api/health").json()["queue"]["jobs_run"]
            pngs = {i: [c.get(im["url"]).content for im in final[i]["images"]] for i in ids}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)

    # None lost: every acknowledged job is done with all its images.
    assert [final[i]["state"] for i in ids] == ["done"] * len(ids)
    assert [len(pngs[i]) for i in ids] == [acked[i]["n"] for i in ids]
    # None run twice: jobs done before a stop kept their record; the last server ran exactly
    # the jobs unfinished when the one before it stopped.
    for seen in (at_kill, at_term):
        for i, job in seen.items():
            if job["state"] == "done":
                assert final[i]["finished"] == job["finished"]
    done_before = [i for i in ids if final[i]["finished"] < t_kill]
    done_between = [i for i in ids if t_kill < final[i]["finished"] < t_term]
    done_last = [i for i in ids if final[i]["finished"] > t_term]
    assert done_before and done_between and done_last
    assert ran_last == len(done_last)
    # The same pixels as drawn alone.
    pipe = gambar.load(tiny_model_dir)
    for i in ids:
        body = acked[i]
        alone = pipe.generate([body["prompt"]] * body["n"],
                              seeds=[body["seed"] + k for k in range(body["n"])], steps=steps,
                              sampler="ddim", guidance=3.0, progress=False)
        for png, gen in zip(pngs[i], alone, strict=True):
            image, prov = png_provenance(png)
            assert prov["seed"] == gen.provenance["seed"]
            assert np.array_equal(np.asarray(image), np.asarray(gen.image)), i
    with capsys.disabled():
        print(f"\nkill -9 / SIGTERM: acknowledged {len(ids)}, done before kill "
              f"{len(done_before)}, after kill {len(done_between)}, after SIGTERM "
              f"{len(done_last)}, completed {len(final)}, lost 0, run twice 0")


@pytest.mark.parametrize("action", ["delete", "cancel"])
def test_a_job_deleted_or_cancelled_while_running_does_not_come_back(
        served_models, tmp_path, action):  # noqa: F811
    """The client got 204 / cancelled: a crash before the worker's next step must not run it."""
    gated = Gated(served_models["tiny"])
    first = service({"tiny": gated}, tmp_path)
    first.start()
    job = first.submit(A, spec(first, 1, steps=20))
    assert gated.running.wait(30)
    getattr(first, action)(job.id)
    first.journal.close()  # what kill -9 leaves: the journal as it is, the folder unlocked
    again = service(served_models, tmp_path)
    again.start()
    try:
        assert again.get(job.id) is None and again.jobs_run == 0
    finally:
        gated.release.set()
        again.stop()
