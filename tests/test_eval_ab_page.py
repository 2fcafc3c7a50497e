"""The A/B page and `gambar ab`: pairs from two models, shuffled sides, votes, ranking."""

import re
import shutil

import pytest
from fastapi.testclient import TestClient

from gambar.cli import main
from gambar.evaluation.ab import ABStore
from gambar.evaluation.ab_page import RATER_COOKIE, create_ab_app, flipped, winner_of
from gambar.provenance import read_provenance
from helpers_models import make_tiny_pipeline


@pytest.fixture()
def two_models(tiny_model_dir, tmp_path):
    """The tiny model and a different one (another random initialisation)."""
    import torch

    other = make_tiny_pipeline()
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(0.05)
    other.save(tmp_path / "other")
    return tiny_model_dir, tmp_path / "other"


def test_sides_are_shuffled_fairly_and_mapped_back():
    flips = [flipped(i, "rater-1") for i in range(400)]
    assert 150 < sum(flips) < 250  # about half of the pairs show model B on the left
    for i in range(20):
        left = "b" if flipped(i, "r") else "a"
        assert winner_of("left", i, "r") == left
        assert winner_of("right", i, "r") == ("a" if left == "b" else "b")
        assert winner_of("tie", i, "r") == "tie"


def test_prepare_serve_vote_rank(two_models, tmp_path, capsys):
    a, b = two_models
    db = tmp_path / "ab" / "ab.sqlite"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n# a comment\ndua bintang biru\n")
    assert main(["ab", "prepare", str(a), str(b), "--prompts-file", str(prompts),
                 "--seeds", "1", "2", "--db", str(db)]) == 0
    assert "4 pairs added" in capsys.readouterr().out
    store = ABStore(db)
    pair = store.pair(1)
    assert (pair.prompt, pair.seed) == ("a red circle", 1) and pair.model_a != pair.model_b
    assert read_provenance(db.parent / "images" / pair.image_a)["seed"] == 1

    client = TestClient(create_ab_app(store))
    first = client.get("/")
    assert first.status_code == 200 and "a red circle" in first.text
    rater = client.cookies.get(RATER_COOKIE)
    assert rater
    shown = re.findall(r'src="/images/([^"]+)"', first.text)
    expected = [pair.image_b, pair.image_a] if flipped(1, rater) else [pair.image_a, pair.image_b]
    assert shown == expected
    assert client.get(f"/images/{shown[0]}").headers["content-type"] == "image/png"
    assert client.get("/images/..%2Fab.sqlite").status_code == 404

    # vote "left" on every pair; each resolves to the model that was on the left
    for _ in range(4):
        page = client.get("/").text
        pair_id = int(re.search(r'name="pair_id" value="(\d+)"', page).group(1))
        assert client.post("/vote", data={"pair_id": pair_id, "choice": "left"},
                           follow_redirects=False).status_code == 303
        client.post("/vote", data={"pair_id": pair_id, "choice": "right"})  # resubmit: ignored
    assert "All pairs judged" in client.get("/").text
    games = store.outcomes()
    assert len(games) == 4
    lefts = sum(flipped(i, rater) for i in range(1, 5))  # pairs where B was on the left
    wins_b = sum(g.winner == pair.model_b for g in games)
    assert wins_b == lefts
    ranking = client.get("/ranking").json()
    assert {r["model"] for r in ranking} == {pair.model_a, pair.model_b}
    assert client.post("/vote", data={"pair_id": 99, "choice": "left"}).status_code == 400
    assert client.post("/vote", data={"pair_id": 1, "choice": "up"}).status_code == 400

    assert main(["ab", "ranking", "--db", str(db)]) == 0
    assert "Bradley-Terry" in capsys.readouterr().out


def test_prepare_refuses_one_model_twice(tiny_model_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert main(["ab", "prepare", str(tiny_model_dir), str(copy), "--per-category", "1",
                 "--db", str(tmp_path / "ab.sqlite")]) == 2
    assert "same model" in capsys.readouterr().err
