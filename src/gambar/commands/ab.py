"""`gambar ab`: prepare A/B pairs from two models, serve the voting page, print the ranking."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gambar.errors import InvalidInputError
from gambar.fsutil import check_writable, is_file

if TYPE_CHECKING:
    from gambar.evaluation.ab import ABStore


def run_ab(args: argparse.Namespace) -> None:
    from gambar.evaluation.ab import ABStore

    db = Path(args.db)
    if args.action != "prepare" and not is_file(db):
        raise InvalidInputError(f"no A/B database at {db}; make one with: gambar ab prepare "
                                f"MODEL_A MODEL_B --db {db}")
    check_writable(db)  # a folder, a path under a file, /proc: one line before any work
    db.parent.mkdir(parents=True, exist_ok=True)
    store = ABStore(db)
    if args.action == "prepare":
        _prepare(args, store)
    elif args.action == "serve":
        import uvicorn

        from gambar.evaluation.ab_page import create_ab_app

        print(f"A/B page: http://{args.host}:{args.port}/  (votes in {db})")
        uvicorn.run(create_ab_app(store), host=args.host, port=args.port, log_level="warning")
    else:
        rows = store.ranking()
        if not rows:
            print("no votes yet")
        for r in rows:
            print(f"{r['model']:40s} Bradley-Terry {r['strength']:.3f}  Elo {r['elo']:6.0f}  "
                  f"games {r['games']}  wins {r['wins']:g}")


def _prepare(args: argparse.Namespace, store: ABStore) -> None:
    from gambar.evaluation.ab_pairs import prepare_pairs
    from gambar.pipeline import load
    from gambar.seeding import check_seed

    if args.prompts_file:
        from gambar.commands.sheet import read_prompt_file

        prompts = read_prompt_file(args.prompts_file)
    else:
        from gambar.evaluation.suites import load_suite

        suite = load_suite(args.suite).subset(args.per_category)
        prompts = [p.prompt for p in suite.prompts]
    if not prompts:
        raise InvalidInputError("no prompts to draw")
    seeds = [check_seed(s) for s in args.seeds]
    a, b = load(args.model_a), load(args.model_b)
    if a.sha256 == b.sha256:
        raise InvalidInputError("the two models are the same model; compare two different ones")
    ids = prepare_pairs(store, a, b, prompts, seeds)
    print(f"{len(ids)} pairs added to {store.path}; serve them with: gambar ab serve "
          f"--db {store.path}")
