"""Evaluation reports: report.json (every figure), report.html (grids + charts), text tables,
and a side-by-side comparison of two report.json files.

Charts need matplotlib (optional): without it the HTML says how to get them and the rest is
written as usual.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gambar.data.shapes_vocab import CATEGORIES
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.evaluation.harness import RESULT_FORMAT, EvalImage, Evaluation
from gambar.fsutil import atomic_write_bytes, atomic_write_text
from gambar.imaging import make_grid

GRID_MIN_SIDE = 64  # grids upscale smaller images so a person can see them
MISSING = "-"


# ---------------------------------------------------------------------------------------------
# Figures by name


def _get(result: dict[str, Any], path: str) -> Any:
    node: Any = result
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def headline(result: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """(name, value, higher_is_better) of the figures a table shows, in a fixed order."""
    rows: list[tuple[str, Any, bool]] = [("judge overall", _get(result, "judge.overall"), True)]
    rows += [(f"judge {c}", _get(result, f"judge.categories.{c}"), True) for c in CATEGORIES]
    for lang in ("en", "id"):
        rows.append((f"judge {lang}", _get(result, f"judge.languages.{lang}.overall"), True))
    rows += [
        ("judge held-out", _get(result, "judge.heldout.overall"), True),
        # a model that plans a layout first: its layouts judged on their own
        ("layout stage overall", _get(result, "layout.overall"), True),
        ("layout stage held-out", _get(result, "layout.heldout.overall"), True),
        ("FID", _get(result, "realism.fid"), False),
        ("KID", _get(result, "realism.kid_mean"), False),
        ("CLIP score", _get(result, "alignment.clip_score.overall"), True),
        ("R-precision", _get(result, "alignment.r_precision.overall"), True),
        ("R-precision held-out", _get(result, "alignment.r_precision.heldout.overall"), True),
        ("diversity (features)", _get(result, "diversity.feature.mean"), True),
        ("diversity (pixels)", _get(result, "diversity.pixel.mean"), True),
        ("class score (IS-style)", _get(result, "diversity.class_entropy.score"), True),
    ]
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(result: dict[str, Any]) -> str:
    """The headline figures of one report as a plain-text table."""
    model, suite = result["model"], result["suite"]
    title = (f"{model['name']} ({model['family']}, {model['sha256'][:12] or 'unsaved'}) on "
             f"{suite['name']} v{suite['version']}, {result['n_per_prompt']} per prompt, "
             f"seed {result['seed']}")
    rows = [(name, _fmt(value)) for name, value, _ in headline(result)]
    note = "" if result.get("realism") else (
        "\n(no contrastive model: FID, KID, CLIP score, R-precision and feature diversity need "
        "--clip)")
    return f"{title}\n{_table(('figure', 'value'), rows)}{note}"


def compare_table(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Two reports side by side with the difference b - a, and warnings where they differ in
    what makes figures comparable (suite file, seed, images per prompt, contrastive model)."""
    rows = []
    for (name, va, better), (_, vb, _) in zip(headline(a), headline(b), strict=True):
        delta = MISSING
        if isinstance(va, int | float) and isinstance(vb, int | float):
            d = vb - va
            mark = "" if d == 0 else ("+" if (d > 0) == better else "-")
            delta = f"{d:+.4f} {mark}".rstrip()
        rows.append((name, _fmt(va), _fmt(vb), delta))
    head = ("figure", _label(a), _label(b), "b - a")
    warnings = []
    if a["suite"]["sha256"] != b["suite"]["sha256"]:
        warnings.append("different suite files: no figure is comparable")
    for key in ("seed", "n_per_prompt"):
        if a.get(key) != b.get(key):
            warnings.append(f"different {key}: {a.get(key)} vs {b.get(key)}")
    ca, cb = a.get("contrastive") or {}, b.get("contrastive") or {}
    if ca and cb and ca.get("sha256") != cb.get("sha256"):
        warnings.append("different contrastive models: FID, KID, CLIP score and R-precision "
                        "are not comparable")
    legend = "(+ = b better, - = b worse)"
    notes = "".join(f"\nwarning: {w}" for w in warnings)
    return f"{_table(head, rows)}\n{legend}{notes}"


def _label(result: dict[str, Any]) -> str:
    return f"{result['model']['name']}@{result['model']['sha256'][:8] or 'unsaved'}"


# ---------------------------------------------------------------------------------------------
# Files


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a report.json written by `write_report` (CorruptFileError if it is not one)."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInputError(f"{path} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path} is unreadable ({exc})") from None
    if not isinstance(result, dict) or result.get("format") != RESULT_FORMAT:
        raise CorruptFileError(f"{path} is not a gambar evaluation report ({RESULT_FORMAT})")
    return result


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _grid_groups(images: Sequence[EvalImage]) -> dict[str, list[EvalImage]]:
    groups: dict[str, list[EvalImage]] = {}
    for e in images:
        name = f"heldout-{e.prompt.category}" if e.prompt.held_out else e.prompt.category
        groups.setdefault(name, []).append(e)
    return groups


def write_report(evaluation: Evaluation, out: str | Path) -> dict[str, Path]:
    """Write report.json, grids/*.png, charts/*.png (with matplotlib) and report.html."""
    out = Path(out)
    (out / "grids").mkdir(parents=True, exist_ok=True)
    result = evaluation.result
    written = {"json": out / "report.json"}
    atomic_write_text(written["json"], json.dumps(result, indent=1, sort_keys=False) + "\n")
    n = result["n_per_prompt"]
    groups = _grid_groups(evaluation.images)
    for name, items in groups.items():
        side = items[0].image.width
        grid = make_grid([e.image for e in items], cols=n,
                         scale=max(1, -(-GRID_MIN_SIDE // side)))
        written[f"grid-{name}"] = out / "grids" / f"{name}.png"
        atomic_write_bytes(written[f"grid-{name}"], _png(grid))
    charts = write_charts(result, out / "charts")
    written.update(charts)
    written["html"] = out / "report.html"
    atomic_write_text(written["html"], render_html(result, groups, n, charts, out))
    return written


def write_charts(result: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Bar charts of per-category figures by language; {} when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    series = [("judge", "judge accuracy", result.get("judge")),
              ("layout", "layout stage accuracy", result.get("layout"))]
    alignment = result.get("alignment") or {}
    series += [("clip_score", "CLIP score", alignment.get("clip_score")),
               ("r_precision", "R-precision", alignment.get("r_precision"))]
    written = {}
    for key, title, summary in series:
        if not summary:
            continue
        # Figure + Agg canvas, not pyplot: no global state, no GUI backend, thread-safe.
        fig = Figure(figsize=(7, 3.2), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        langs = sorted(summary.get("languages", {}))
        width = 0.8 / (len(langs) + 1)
        for k, (label, block) in enumerate(
                [(f"{lang}", summary["languages"][lang]) for lang in langs]
                + [("held-out", summary.get("heldout", {}))]):
            values = [(block.get("categories") or {}).get(c) for c in CATEGORIES]
            xs = [i + (k - len(langs) / 2) * width for i in range(len(CATEGORIES))]
            ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=label)
        ax.set_xticks(range(len(CATEGORIES)), [c.replace("_", " ") for c in CATEGORIES])
        ax.set_title(f"{title} by category")
        ax.legend(fontsize="small")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        written[f"chart-{key}"] = folder / f"{key}.png"
        atomic_write_bytes(written[f"chart-{key}"], buf.getvalue())
    return written


def render_html(result: dict[str, Any], groups: dict[str, list[EvalImage]], n: int,
                charts: dict[str, Path], out: Path) -> str:
    """A self-contained page (images beside it) with the table, charts and one grid per
    category; each grid row is one prompt, its n seeds left to right."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>gambar evaluation: {esc(result['model']['name'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "td,th{padding:2px 8px;text-align:left}.ok{color:#070}.bad{color:#a00}"
        "pre{background:#f4f4f4;padding:1em}</style></head><body>",
        f"<h1>{esc(result['model']['name'])} on {esc(result['suite']['name'])}</h1>",
        f"<pre>{esc(format_table(result))}</pre>",
        "<p>Sampler: " + esc(json.dumps(result.get("sampler", {}))) + "</p>",
        "<p>FID and KID use gambar's contrastive image features, not Inception: they compare "
        "gambar models evaluated with the same contrastive model, never papers' figures.</p>",
    ]
    if charts:
        parts += [f"<img src='{p.relative_to(out).as_posix()}' alt='{esc(k)}'>"
                  for k, p in charts.items()]
    else:
        parts.append("<p><i>Charts need matplotlib: pip install matplotlib</i></p>")
    verdicts = {(r["prompt_id"], r["seed"]): r for r in result.get("images", [])}
    for name, items in groups.items():
        parts.append(f"<h2>{esc(name.replace('_', ' '))}</h2>")
        parts.append(f"<img src='grids/{esc(name)}.png' alt='{esc(name)} grid'>")
        parts.append("<table><tr><th>row</th><th>prompt</th><th>correct</th>"
                     "<th>first reason</th></tr>")
        for row, start in enumerate(range(0, len(items), n)):
            chunk = items[start:start + n]
            marks = [verdicts.get((e.prompt.id, e.seed), {}) for e in chunk]
            ok = sum(bool(m.get("correct")) for m in marks)
            reason = next((m.get("reason", "") for m in marks if not m.get("correct")), "")
            cls = "ok" if ok == len(chunk) else "bad"
            parts.append(f"<tr><td>{row + 1}</td><td>{esc(chunk[0].prompt.prompt)}</td>"
                         f"<td class='{cls}'>{ok}/{len(chunk)}</td><td>{esc(reason)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
