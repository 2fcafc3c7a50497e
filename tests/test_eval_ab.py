"""A/B human judgement: SQLite storage, Bradley-Terry and Elo rankings."""

import threading

import numpy as np
import pytest

from gambar.errors import CorruptFileError, InvalidInputError
from gambar.evaluation.ab import ELO_K, ELO_START, ABStore, Outcome, bradley_terry, elo_ratings


def store_with_pairs(path, n=3):
    store = ABStore(path)
    ids = [store.add_pair(f"prompt {k}", k, "m1", "m2", f"a{k}.png", f"b{k}.png")
           for k in range(n)]
    return store, ids


def test_votes_round_trip_and_survive_reopening(tmp_path):
    store, (p0, p1, p2) = store_with_pairs(tmp_path / "ab.sqlite")
    store.vote(p0, "a", "ann")
    store.vote(p1, "b", "ann")
    store.vote(p2, "tie", "bob")
    reopened = ABStore(tmp_path / "ab.sqlite")
    assert reopened.outcomes() == [Outcome("m1", "m2"), Outcome("m2", "m1"),
                                   Outcome("m1", "m2", tie=True)]
    assert reopened.pair(p1).prompt == "prompt 1"


def test_next_pair_skips_what_the_rater_voted_on(tmp_path):
    store, (p0, p1, p2) = store_with_pairs(tmp_path / "ab.sqlite")
    store.vote(p0, "a", "bob")  # p0 now has a vote: others come first for anyone
    assert store.next_pair("ann").id == p1
    store.vote(p1, "a", "ann")
    store.vote(p2, "a", "ann")
    assert store.next_pair("ann").id == p0
    store.vote(p0, "b", "ann")
    assert store.next_pair("ann") is None


def test_bad_votes_are_refused(tmp_path):
    store, (p0, *_) = store_with_pairs(tmp_path / "ab.sqlite")
    with pytest.raises(InvalidInputError, match="winner"):
        store.vote(p0, "left")
    with pytest.raises(InvalidInputError, match="no A/B pair"):
        store.vote(999, "a")
    with pytest.raises(InvalidInputError, match="two different models"):
        store.add_pair("p", 0, "m1", "m1", "a.png", "b.png")
    assert store.outcomes() == []


def test_concurrent_votes_are_all_kept(tmp_path):
    store, ids = store_with_pairs(tmp_path / "ab.sqlite", n=2)

    def cast(rater):
        for k in range(25):
            store.vote(ids[k % 2], "a", rater)

    threads = [threading.Thread(target=cast, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.outcomes()) == 100


def test_bradley_terry_recovers_known_strengths():
    truth = {"a": 0.6, "b": 0.3, "c": 0.1}
    rng = np.random.default_rng(0)
    names = list(truth)
    games = []
    for _ in range(6000):
        i, j = rng.choice(3, size=2, replace=False)
        x, y = names[i], names[j]
        p = truth[x] / (truth[x] + truth[y])
        games.append(Outcome(x, y) if rng.random() < p else Outcome(y, x))
    fitted = bradley_terry(games)
    for name, strength in truth.items():
        assert fitted[name] == pytest.approx(strength, abs=0.02)
    assert sum(fitted.values()) == pytest.approx(1.0)


def test_bradley_terry_ties_and_unbeaten_models():
    assert bradley_terry([Outcome("a", "b", tie=True)] * 5) == pytest.approx(
        {"a": 0.5, "b": 0.5})
    unbeaten = bradley_terry([Outcome("a", "b")] * 3)
    assert 0.9 < unbeaten["a"] < 1.0 and unbeaten["b"] > 0  # finite thanks to the prior
    assert bradley_terry([]) == {}


def test_elo_known_updates():
    first = elo_ratings([Outcome("a", "b")])
    assert first == {"a": ELO_START + ELO_K / 2, "b": ELO_START - ELO_K / 2}
    ratings = elo_ratings([Outcome("a", "b"), Outcome("a", "c"), Outcome("b", "c")] * 10)
    assert ratings["a"] > ratings["b"] > ratings["c"]
    assert sum(ratings.values()) == pytest.approx(3 * ELO_START)
    assert elo_ratings([Outcome("a", "b", tie=True)]) == {"a": ELO_START, "b": ELO_START}


def test_ranking_orders_models(tmp_path):
    store = ABStore(tmp_path / "ab.sqlite")
    for k, (a, b, w) in enumerate([("x", "y", "a"), ("y", "z", "a"), ("x", "z", "a"),
                                   ("z", "x", "b"), ("y", "x", "tie")]):
        store.vote(store.add_pair("p", k, a, b, "a.png", "b.png"), w)
    ranking = store.ranking()
    assert [r["model"] for r in ranking] == ["x", "y", "z"]
    assert ranking[0]["games"] == 4 and ranking[0]["wins"] == 3.5
    assert ranking[0]["elo"] > ranking[-1]["elo"]


def test_a_file_that_is_not_a_database_is_a_one_line_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_bytes("caf\xe9 is not SQLite\n".encode("latin-1") * 20)
    with pytest.raises(CorruptFileError, match="not a usable A/B database"):
        ABStore(bad)


@pytest.mark.parametrize("db", ["{file}", "{file}/x.sqlite", "/proc/x.sqlite"])
def test_cli_ab_refuses_unusable_databases(db, tmp_path, capsys):
    from gambar.cli import main

    (tmp_path / "f.png").write_bytes(b"not a database, not empty" * 10)
    db = db.replace("{file}", str(tmp_path / "f.png"))
    action = ["ranking"] if db.endswith(".png") else ["prepare", "default", "default"]
    assert main(["ab", *action, "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
