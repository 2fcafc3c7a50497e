"""The A/B page: a person sees two models' images for one prompt and picks the better one.

Server-rendered HTML with plain forms (no script): it works in any browser and in tests. Which
model is shown on the left is decided per (pair, rater) by a hash, so neither model profits from
a side, and the server (not the form) maps "left"/"right" back to a model. A rater is a cookie.
"""

from __future__ import annotations

import hashlib
import html
import secrets
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from gambar.errors import InvalidInputError
from gambar.evaluation.ab import ABStore
from gambar.evaluation.ab_pairs import IMAGES

RATER_COOKIE = "gambar_rater"
STYLE = """body{font-family:system-ui,sans-serif;max-width:760px;margin:1.5rem auto;padding:0 1rem}
.pair{display:flex;gap:1rem;justify-content:center}.pair figure{margin:0;text-align:center}
.pair img{width:256px;height:256px;image-rendering:pixelated;border:1px solid #ccc}
form.vote{display:flex;gap:.5rem;justify-content:center;margin:1rem 0}
button{font-size:1.05rem;padding:.5rem 1.2rem}table{border-collapse:collapse;margin-top:1rem}
td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}
@media (max-width:560px){.pair img{width:42vw;height:42vw}}"""


def flipped(pair_id: int, rater: str) -> bool:
    """Whether model B is shown on the left for this rater (a fair coin per pair and rater)."""
    return hashlib.sha256(f"{pair_id}:{rater}".encode()).digest()[0] % 2 == 1


def winner_of(choice: str, pair_id: int, rater: str) -> str:
    """The stored winner ("a" | "b" | "tie") of a click on "left" | "right" | "tie"."""
    if choice == "tie":
        return "tie"
    if choice not in ("left", "right"):
        raise InvalidInputError(f"choice must be left, right or tie, not {choice!r}")
    left_is_b = flipped(pair_id, rater)
    return ("b" if left_is_b else "a") if choice == "left" else ("a" if left_is_b else "b")


def _ranking_table(store: ABStore) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(r['model']))}</td><td>{r['strength']:.3f}</td>"
        f"<td>{r['elo']:.0f}</td><td>{r['games']}</td><td>{r['wins']:g}</td></tr>"
        for r in store.ranking())
    if not rows:
        return "<p>No votes yet.</p>"
    return ("<table><tr><th>model</th><th>Bradley-Terry</th><th>Elo</th><th>games</th>"
            f"<th>wins</th></tr>{rows}</table>")


def create_ab_app(store: ABStore) -> FastAPI:
    """The A/B app over `store`; images are read from the folder beside its database."""
    app = FastAPI(title="gambar A/B", docs_url=None, redoc_url=None)
    images = (store.path.parent / IMAGES).resolve()

    def rater_of(request: Request) -> str:
        return request.cookies.get(RATER_COOKIE) or ""

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        rater = rater_of(request) or secrets.token_hex(8)
        pair = store.next_pair(rater)
        if pair is None:
            body = "<h1>All pairs judged — thank you.</h1>"
        else:
            sides = [(pair.image_a, "a"), (pair.image_b, "b")]
            if flipped(pair.id, rater):
                sides.reverse()
            figures = "".join(
                f'<figure><img src="/images/{html.escape(img)}" alt="{side_name} image">'
                f"<figcaption>{side_name}</figcaption></figure>"
                for (img, _), side_name in zip(sides, ("left", "right"), strict=True))
            buttons = "".join(
                f'<button name="choice" value="{v}">{t}</button>'
                for v, t in (("left", "Left is better"), ("tie", "Equal"),
                             ("right", "Right is better")))
            body = (f"<h1>Which image fits the prompt better?</h1>"
                    f"<p><strong>{html.escape(pair.prompt)}</strong> (seed {pair.seed})</p>"
                    f'<div class="pair">{figures}</div>'
                    f'<form class="vote" method="post" action="/vote">'
                    f'<input type="hidden" name="pair_id" value="{pair.id}">{buttons}</form>')
        doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
               f'<meta name="viewport" content="width=device-width, initial-scale=1">'
               f"<title>gambar A/B</title><style>{STYLE}</style></head><body>{body}"
               f"<h2>Ranking so far</h2>{_ranking_table(store)}</body></html>")
        response = HTMLResponse(doc)
        if not rater_of(request):
            response.set_cookie(RATER_COOKIE, rater, max_age=365 * 86400, samesite="strict")
        return response

    @app.post("/vote")
    async def vote(request: Request) -> RedirectResponse:
        # The form is two urlencoded fields: parsed here rather than through FastAPI's Form(),
        # which would need python-multipart for nothing more.
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        rater = rater_of(request)
        if not rater:
            raise HTTPException(400, "no rater cookie: open the page first")
        try:
            pair_id = int(fields.get("pair_id", [""])[0])
            choice = fields.get("choice", [""])[0]
        except ValueError:
            raise HTTPException(400, "pair_id must be a number") from None
        try:
            store.pair(pair_id)
            winner = winner_of(choice, pair_id, rater)
            if not store.voted(pair_id, rater):  # a resubmitted form counts once
                store.vote(pair_id, winner, rater)
        except InvalidInputError as exc:
            raise HTTPException(400, str(exc)) from None
        return RedirectResponse("/", status_code=303)

    @app.get("/ranking")
    def ranking() -> JSONResponse:
        return JSONResponse(store.ranking())

    @app.get("/images/{name}")
    def image(name: str) -> FileResponse:
        path = (images / name).resolve()
        if path.parent != images or not path.is_file() or path.suffix != ".png":
            raise HTTPException(404, "no such image")
        return FileResponse(Path(path), media_type="image/png")

    return app
