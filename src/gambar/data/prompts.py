"""Parse a shapes-domain prompt (English or Indonesian) into the `SceneSpec` it asks for.

The grammar is the one of ../shared/shapes-spec.md: single objects, counts (1-4), two objects,
position relations and sizes, and their combinations ("two large red stars", "a small pink heart
above a black square"), with the wording variety of training captions (articles, "there is",
"ada", plurals, "on a white background", "dengan latar putih", case and punctuation).

Words are matched as phrases, longest first, so that "merah muda" (pink) wins over "merah" (red),
"belah ketupat" is one shape, and "di atas latar putih" (on a white background) wins over the
relation "di atas" (above).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gambar.data.shapes_vocab import (
    COLORS,
    COLORS_ID,
    NUMBERS_EN,
    NUMBERS_ID,
    RELATION_PHRASES_EN,
    RELATION_PHRASES_ID,
    SHAPE_PLURALS,
    SHAPES,
    SHAPES_ID,
    SIZES,
    SIZES_ID,
    ObjectSpec,
    Relation,
    SceneSpec,
)
from gambar.errors import InvalidInputError

MAX_COUNT = max(NUMBERS_EN)  # the grammar counts up to four
EXAMPLE = "e.g. 'a red circle' or 'sebuah lingkaran merah'"
_REL_EXAMPLE = "a red circle to the left of a blue square"

# Wordings people use beside the generator's own (RELATION_PHRASES_*); same meaning.
_EXTRA_RELATIONS_EN = {
    "on the left of": "left of",
    "on the left side of": "left of",
    "to the left side of": "left of",
    "on the right of": "right of",
    "on the right side of": "right of",
    "to the right side of": "right of",
}
_EXTRA_SIZES = {"en": {"big": "large", "medium sized": "medium"}, "id": {}}
_ARTICLES = {"en": ("a", "an", "the"), "id": ("sebuah",)}
_INTROS = {
    "en": (
        "there is",
        "there are",
        "theres",
        "here is",
        "an image of",
        "a picture of",
        "a drawing of",
        "image of",
        "picture of",
        "drawing of",
    ),
    "id": ("ada", "terdapat", "gambar"),
}
_BACKGROUNDS = {
    "en": tuple(
        f"{prep} {art}{adj}white background"
        for prep in ("on", "against", "with", "over")
        for art in ("a ", "the ", "")
        for adj in ("", "plain ")
    ),
    # "di atas latar putih" is a background, not the relation "di atas": longest match decides.
    "id": tuple(
        f"{prep}latar {extra}putih"
        for prep in ("di atas ", "dengan ", "pada ", "")
        for extra in ("", "belakang ", "berwarna ")
    )
    + ("berlatar putih", "berlatar belakang putih"),
}
_FILLERS = {"en": (), "id": ("yang", "berwarna", "buah", "dari")}
_CONNECTIVES = {"en": ("and", ","), "id": ("dan", ",")}


@dataclass(frozen=True)
class _Token:
    kind: str  # color | shape | size | num | art | and | rel | skip
    value: str | int | None = None
    plural: bool = False
    text: str = ""


def _lexicon(language: str) -> dict[tuple[str, ...], _Token]:
    """Phrase (tuple of words) -> token, for one language."""
    entries: dict[str, _Token] = {}
    en = language == "en"
    for name in COLORS:
        entries[name if en else COLORS_ID[name]] = _Token("color", name)
    for name in SHAPES:
        entries[name if en else SHAPES_ID[name]] = _Token("shape", name)
        if en:
            entries[SHAPE_PLURALS[name]] = _Token("shape", name, plural=True)
    for name in SIZES:
        entries[name if en else SIZES_ID[name]] = _Token("size", name)
    for word, name in _EXTRA_SIZES[language].items():
        entries[word] = _Token("size", name)
    for n, word in (NUMBERS_EN if en else NUMBERS_ID).items():
        entries[word] = _Token("num", n)
    for n in range(10):
        entries[str(n)] = _Token("num", n)  # digits beyond MAX_COUNT get a clear error later
    for word in _ARTICLES[language]:
        entries[word] = _Token("art", 1)
    for word in _CONNECTIVES[language]:
        entries[word] = _Token("and")
    for relation, phrases in (RELATION_PHRASES_EN if en else RELATION_PHRASES_ID).items():
        for phrase in phrases:
            entries[phrase] = _Token("rel", relation)
            if not en:
                entries[phrase + " dari"] = _Token("rel", relation)  # "di sebelah kiri dari"
    if en:
        for phrase, relation in _EXTRA_RELATIONS_EN.items():
            entries[phrase] = _Token("rel", relation)
    for phrase in _INTROS[language] + _BACKGROUNDS[language] + _FILLERS[language]:
        entries[phrase] = _Token("skip")
    return {tuple(k.split()): v for k, v in entries.items()}


_LEXICONS = {lang: _lexicon(lang) for lang in ("en", "id")}
_MAX_PHRASE = max(len(k) for lex in _LEXICONS.values() for k in lex)
# Words that only one language uses, for telling them apart (digits and "," are shared).
_WORDS = {lang: {w for k in lex for w in k} for lang, lex in _LEXICONS.items()}
_ONLY = {"en": _WORDS["en"] - _WORDS["id"], "id": _WORDS["id"] - _WORDS["en"]}


def _words(text: str) -> list[str]:
    """Lower-case words; "," kept as a word (it separates objects); other punctuation dropped."""
    text = text.lower().replace("\u2019", "'").replace("'", "")
    # Indonesian plural by reduplication ("bintang-bintang") means the same noun.
    text = re.sub(r"\b(\w+)-\1\b", r"\1", text)
    text = text.replace(",", " , ")
    return re.sub(r"[^\w,]+", " ", text).split()


def detect_language(text: str) -> str:
    """The prompt's language: "id" if it has more Indonesian-only than English-only words."""
    words = _words(text)
    n_en = sum(w in _ONLY["en"] for w in words)
    n_id = sum(w in _ONLY["id"] for w in words)
    return "id" if n_id > n_en else "en"


def _tokenize(words: list[str], language: str) -> list[_Token]:
    lex, tokens, i = _LEXICONS[language], [], 0
    while i < len(words):
        for n in range(min(_MAX_PHRASE, len(words) - i), 0, -1):  # longest phrase first
            key = tuple(words[i : i + n])
            if key in lex:
                tok = lex[key]
                if tok.kind != "skip":
                    tokens.append(_Token(tok.kind, tok.value, tok.plural, " ".join(key)))
                i += n
                break
        else:
            raise InvalidInputError(
                f"'{words[i]}' is not a word of the shapes grammar ({language}); {EXAMPLE}"
            )
    return tokens


def _group(tokens: list[_Token], language: str) -> list[ObjectSpec]:
    """One noun phrase ("three large red stars", "tiga bintang merah besar") -> its objects."""
    said = " ".join(t.text for t in tokens) or "nothing"
    count, explicit = 1, False
    if tokens and tokens[0].kind in ("num", "art"):
        explicit = tokens[0].kind == "num"
        count = int(tokens[0].value) if explicit else 1  # type: ignore[arg-type]
        tokens = tokens[1:]
    nouns = [i for i, t in enumerate(tokens) if t.kind == "shape"]
    if len(nouns) != 1:
        raise InvalidInputError(f"'{said}' must name exactly one shape; {EXAMPLE}")
    noun, before, after = tokens[nouns[0]], tokens[: nouns[0]], tokens[nouns[0] + 1 :]
    # English puts adjectives before the noun, Indonesian after it.
    modifiers, misplaced = (before, after) if language == "en" else (after, before)
    if misplaced:
        order = "before" if language == "en" else "after"
        raise InvalidInputError(f"in '{said}', colour and size words go {order} the shape")
    colors = [str(t.value) for t in modifiers if t.kind == "color"]
    sizes = [str(t.value) for t in modifiers if t.kind == "size"]
    if len(colors) + len(sizes) != len(modifiers):
        raise InvalidInputError(f"'{said}' is not '<number> <size> <colour> <shape>'; {EXAMPLE}")
    if len(colors) != 1:
        raise InvalidInputError(f"'{said}' must give exactly one colour; {EXAMPLE}")
    if len(sizes) > 1:
        raise InvalidInputError(f"'{said}' gives more than one size")
    if not 1 <= count <= MAX_COUNT:
        raise InvalidInputError(f"'{said}': counts go from 1 to {MAX_COUNT}")
    if noun.plural and not explicit:
        raise InvalidInputError(f"'{said}' does not say how many; e.g. 'three blue stars'")
    return [ObjectSpec(colors[0], str(noun.value), sizes[0] if sizes else None)] * count


def parse_prompt(text: str) -> SceneSpec:
    """Prompt (English or Indonesian) -> SceneSpec with objects, relation and category.

    "A left of B" gives objects (A, B) and Relation(0, "left of", 1). Raises InvalidInputError
    for a prompt outside the shapes grammar.
    """
    if not text or not text.strip():
        raise InvalidInputError(f"the prompt is empty; describe the image, {EXAMPLE}")
    language = detect_language(text)
    tokens = _tokenize(_words(text), language)
    groups: list[list[_Token]] = [[]]
    separators: list[_Token] = []
    for tok in tokens:
        if tok.kind in ("and", "rel"):
            separators.append(tok)
            groups.append([])
        else:
            groups[-1].append(tok)
    if any(not g for g in groups):
        joiners = "', '".join(s.text for s in separators)
        raise InvalidInputError(f"'{joiners}' needs an object on each side; {EXAMPLE}")
    relations = [s for s in separators if s.kind == "rel"]
    if relations and len(groups) != 2:
        raise InvalidInputError(f"a relation joins exactly two objects, as in '{_REL_EXAMPLE}'")
    objects = [_group(g, language) for g in groups]
    relation = None
    if relations:
        if len(objects[0]) != 1 or len(objects[1]) != 1:
            raise InvalidInputError(f"a relation joins single objects, as in '{_REL_EXAMPLE}'")
        relation = Relation(0, str(relations[0].value), 1)
    flat = tuple(o for g in objects for o in g)
    if relation is not None:
        category = "position"
    elif len(objects) > 1:
        category = "two_objects"
    elif len(flat) > 1:
        category = "count"
    elif flat[0].size is not None:
        category = "size"
    else:
        category = "single"
    return SceneSpec(flat, relation, category)
