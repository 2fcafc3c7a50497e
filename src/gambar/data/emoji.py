"""The emoji dataset: every emoji that Noto Color Emoji draws, captioned in English and Indonesian.

Images come from Debian's fonts-noto-color-emoji (SIL OFL 1.1), drawn by Pillow; names and aliases
from the PyPI `emoji` package (BSD; English, and Indonesian from its emoji_id.json); group and
subgroup ("a fruit", "buah") from Unicode's emoji-test.txt (Debian unicode-data). Skin-tone, gender,
hair and direction variants of one emoji form a *variant group* that a split never divides, so test
images are never near-duplicates of training ones.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features

from gambar.data.formats import Record
from gambar.data.formats.imagefolder import (
    BuildReport,
    ImageFolderWriter,
    card_header,
    package_versions,
)
from gambar.data.loading import check_image_size
from gambar.errors import InvalidInputError

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
FONT_SIZE = 109  # the only size Noto Color Emoji's bitmap strike draws at (others: OSError)
CELL = 136  # its bitmaps are 136 x 128: drawn 4 px down on a 136 x 136 canvas the art is centred
TOP = 4
UNKNOWN_FLAG = "\U0001f1ff\U0001f1ff"  # "ZZ" is no region: the font draws its "?" flag for it
BACKGROUNDS: tuple[str, ...] = ("white", "transparent")
LANGUAGES: tuple[str, ...] = ("en", "id")
FULLY_QUALIFIED = 2  # emoji package status code
ZWJ, VS16 = "\u200d", "\ufe0f"
SKIN_TONES = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))
HAIR = frozenset(chr(c) for c in range(0x1F9B0, 0x1F9B4))
# ZWJ parts that only vary a base emoji: gender signs, hair, facing right (Emoji 15.1).
VARIANT_PARTS = frozenset({"\u2640", "\u2642", "\u27a1", *HAIR})
# Gendered/aged people -> the neutral one, so "man/woman/person X" share a variant group.
NEUTRAL = {
    "\U0001f468": "\U0001f9d1", "\U0001f469": "\U0001f9d1",  # man, woman -> person
    "\U0001f466": "\U0001f9d2", "\U0001f467": "\U0001f9d2",  # boy, girl -> child
    "\U0001f474": "\U0001f9d3", "\U0001f475": "\U0001f9d3",  # old man, old woman -> older
    "\U0001f934": "\U0001fac5", "\U0001f478": "\U0001fac5",  # prince, princess -> with crown
    "\U0001f46b": "\U0001f9d1\U0001f91d\U0001f9d1",  # woman and man holding hands
    "\U0001f46c": "\U0001f9d1\U0001f91d\U0001f9d1",  # men holding hands
    "\U0001f46d": "\U0001f9d1\U0001f91d\U0001f9d1",  # women holding hands
}
SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.9), ("test", 1.0))


# Unicode subgroup -> a caption for the kind of thing (English, Indonesian). Subgroups too mixed to
# name usefully (other-object, person-symbol, hotel, ...) have none.
SUBGROUP_PHRASES: dict[str, tuple[str, str]] = {
    "face-smiling": ("a smiling face", "wajah tersenyum"),
    "face-affection": ("an affectionate face", "wajah penuh kasih sayang"),
    "face-tongue": ("a face with its tongue out", "wajah menjulurkan lidah"),
    "face-hand": ("a face with a hand", "wajah dengan tangan"),
    "face-neutral-skeptical": ("a neutral or skeptical face", "wajah datar atau ragu"),
    "face-sleepy": ("a sleepy face", "wajah mengantuk"),
    "face-unwell": ("an unwell face", "wajah sakit"),
    "face-hat": ("a face with a hat", "wajah bertopi"),
    "face-glasses": ("a face with glasses", "wajah berkacamata"),
    "face-concerned": ("a worried face", "wajah cemas"),
    "face-negative": ("an angry face", "wajah marah"),
    "face-costume": ("a costume face", "wajah kostum"),
    "cat-face": ("a cat face", "wajah kucing"),
    "monkey-face": ("a monkey face", "wajah monyet"),
    "heart": ("a heart", "hati"),
    "hand-fingers-open": ("a hand gesture", "gerakan tangan"),
    "hand-fingers-partial": ("a hand gesture", "gerakan tangan"),
    "hand-single-finger": ("a pointing hand", "tangan menunjuk"),
    "hand-fingers-closed": ("a hand gesture", "gerakan tangan"),
    "hands": ("hands", "tangan"),
    "hand-prop": ("a hand holding something", "tangan memegang sesuatu"),
    "body-parts": ("a body part", "bagian tubuh"),
    "person": ("a person", "orang"),
    "person-gesture": ("a person making a gesture", "orang yang memberi isyarat"),
    "person-role": ("a person in a job or role", "orang dengan profesi atau peran"),
    "person-fantasy": ("a fantasy character", "tokoh fantasi"),
    "person-activity": ("a person doing something", "orang yang sedang beraktivitas"),
    "person-sport": ("a person playing sport", "orang berolahraga"),
    "person-resting": ("a person resting", "orang beristirahat"),
    "family": ("a family or couple", "keluarga atau pasangan"),
    "animal-mammal": ("a mammal", "mamalia"),
    "animal-bird": ("a bird", "burung"),
    "animal-amphibian": ("an amphibian", "amfibi"),
    "animal-reptile": ("a reptile", "reptil"),
    "animal-marine": ("a sea animal", "hewan laut"),
    "animal-bug": ("a bug", "serangga"),
    "plant-flower": ("a flower", "bunga"),
    "plant-other": ("a plant", "tumbuhan"),
    "food-fruit": ("a fruit", "buah"),
    "food-vegetable": ("a vegetable", "sayuran"),
    "food-prepared": ("a dish", "hidangan"),
    "food-asian": ("Asian food", "makanan Asia"),
    "food-marine": ("seafood", "makanan laut"),
    "food-sweet": ("a sweet", "makanan manis"),
    "drink": ("a drink", "minuman"),
    "dishware": ("dishware", "peralatan makan"),
    "place-map": ("a map", "peta"),
    "place-geographic": ("a landscape", "pemandangan alam"),
    "place-building": ("a building", "bangunan"),
    "place-religious": ("a place of worship", "tempat ibadah"),
    "transport-ground": ("a land vehicle", "kendaraan darat"),
    "transport-water": ("a boat", "kendaraan air"),
    "transport-air": ("an aircraft", "kendaraan udara"),
    "time": ("a clock", "jam"),
    "sky & weather": ("sky and weather", "langit dan cuaca"),
    "event": ("a celebration", "perayaan"),
    "award-medal": ("an award", "penghargaan"),
    "sport": ("sports equipment", "peralatan olahraga"),
    "game": ("a game", "permainan"),
    "arts & crafts": ("arts and crafts", "seni dan kerajinan"),
    "clothing": ("clothing", "pakaian"),
    "sound": ("something that makes a sound", "benda yang berbunyi"),
    "music": ("music", "musik"),
    "musical-instrument": ("a musical instrument", "alat musik"),
    "phone": ("a phone", "telepon"),
    "computer": ("a computer or device", "komputer atau perangkat"),
    "light & video": ("a light or camera", "lampu atau kamera"),
    "book-paper": ("a book or paper", "buku atau kertas"),
    "money": ("money", "uang"),
    "mail": ("mail", "surat"),
    "writing": ("a writing tool", "alat tulis"),
    "office": ("office supplies", "perlengkapan kantor"),
    "lock": ("a lock or key", "gembok atau kunci"),
    "tool": ("a tool", "perkakas"),
    "science": ("a science object", "alat sains"),
    "medical": ("a medical object", "alat medis"),
    "household": ("a household object", "barang rumah tangga"),
    "transport-sign": ("a transport sign", "rambu transportasi"),
    "warning": ("a warning sign", "tanda peringatan"),
    "arrow": ("an arrow", "panah"),
    "religion": ("a religious symbol", "simbol agama"),
    "zodiac": ("a zodiac sign", "zodiak"),
    "av-symbol": ("a media control symbol", "simbol kontrol media"),
    "gender": ("a gender symbol", "simbol gender"),
    "math": ("a math symbol", "simbol matematika"),
    "punctuation": ("a punctuation mark", "tanda baca"),
    "currency": ("a currency symbol", "simbol mata uang"),
    "keycap": ("a keycap", "tombol papan ketik"),
    "geometric": ("a geometric shape", "bentuk geometris"),
    "flag": ("a flag", "bendera"),
    "country-flag": ("a national flag", "bendera negara"),
    "subdivision-flag": ("a regional flag", "bendera wilayah"),
}
FLAG_SUBGROUPS = frozenset({"country-flag", "subdivision-flag"})
_ALIAS_RE = re.compile(r"^\w[\w '’.&()-]*$")
MIN_ALIAS = 3  # shorter aliases are letters like "v" or "a" (GitHub shortcodes), no captions
# Singular nouns ending in "s" that the plural check must not take for plurals.
_SINGULAR_ENDINGS = ("ss", "us", "is")


_TONES_RE = re.compile(r"((?: (?:light|medium-light|medium|medium-dark|dark) skin tone)+)$")


def shortcode_words(code: str) -> str:
    """":red_apple:" -> "red apple" (case kept: "Indonesia", "OK hand")."""
    return code.strip(":").replace("_", " ").strip()


def readable_name(name: str) -> str:
    """"waving hand light skin tone" -> "waving hand with light skin tone" (tones joined)."""
    match = _TONES_RE.search(name)
    if not match or match.start() == 0:
        return name
    tones = list(dict.fromkeys(t.strip() for t in match.group(1).split("skin tone") if t.strip()))
    said = f"{tones[0]} skin tone" if len(tones) == 1 else \
        f"{', '.join(tones[:-1])} and {tones[-1]} skin tones"
    return f"{name[: match.start()]} with {said}"


def with_article(name: str) -> str | None:
    """"red apple" -> "a red apple"; None where an article would be wrong or doubtful.

    No article for proper nouns and other capitalised names, plurals ("chopsticks") and names
    that start with a digit or symbol.
    """
    last = name.split()[-1]
    if not name[:1].islower() or (last.endswith("s") and not last.endswith(_SINGULAR_ENDINGS)):
        return None
    vowel = name[0] in "aeio" or (name[0] == "u" and not name.startswith(("uni", "use", "ur")))
    return ("an " if vowel else "a ") + name


def english_captions(name: str, aliases: Sequence[str], subgroup: str
                     ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(captions, kept aliases): "a red apple", "red apple", aliases, "a fruit"; flags add
    "the flag of X". Aliases that are symbols (":+1:") or repeat the name are dropped."""
    name = readable_name(name)
    out = [c for c in (with_article(name), name) if c]
    if subgroup in FLAG_SUBGROUPS:
        out.append(f"the flag of {name}")
    seen = {c.lower() for c in out}
    kept = []
    for alias in aliases:
        if _ALIAS_RE.match(alias) and len(alias) >= MIN_ALIAS and alias.lower() not in seen:
            kept.append(alias)
            seen.add(alias.lower())
    phrase = SUBGROUP_PHRASES.get(subgroup, ("", ""))[0]
    kind = [phrase] if phrase and phrase.lower() not in seen else []
    return tuple(out + kept + kind), tuple(kept)


@dataclass(frozen=True)
class EmojiItem:
    """One emoji with its names, captions, Unicode group and variant group."""

    emoji: str
    name: str  # English, from the emoji package
    name_id: str  # Indonesian
    aliases: tuple[str, ...]
    group: str
    subgroup: str
    version: float  # Emoji version that added it
    variant_group: str  # codepoints of the group's first member, e.g. "1F44D"
    captions_en: tuple[str, ...]
    captions_id: tuple[str, ...]

    @property
    def codepoints(self) -> str:
        """"1F44D-1F3FD": the emoji's codepoints, also its file name."""
        return "-".join(f"{ord(c):04X}" for c in self.emoji)

    @property
    def split(self) -> str:
        """train / val / test (80/10/10), from a hash of the variant group only."""
        return split_of(self.variant_group)


def split_of(key: str) -> str:
    """A stable split for a group key: unchanged when other groups come or go."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return next(name for name, upper in SPLIT_FRACTIONS if u < upper)


def _require(path: Path, package: str) -> Path:
    if not path.is_file():
        raise InvalidInputError(
            f"{path} is missing; install it with: apt-get install -y {package}")
    return path


@cache
def emoji_font(path: Path = EMOJI_FONT) -> ImageFont.FreeTypeFont:
    """Noto Color Emoji at its one drawable size, with complex layout for ZWJ sequences/flags."""
    _require(path, "fonts-noto-color-emoji")
    if not features.check("raqm"):
        raise InvalidInputError(
            "Pillow has no complex text layout (libraqm), so it cannot join emoji sequences; "
            "install libfribidi0 (apt-get install -y libfribidi0)")
    return ImageFont.truetype(str(path), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)


def draw_full(emoji: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    """The emoji as the font draws it: RGBA 136 x 136, transparent around it."""
    canvas = Image.new("RGBA", (CELL, CELL), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, TOP), emoji, font=font, embedded_color=True)
    return canvas


def render_emoji(emoji: str, size: int = 64, background: str = "white",
                 font_path: Path = EMOJI_FONT) -> Image.Image:
    """The emoji at size x size: RGB on white, or RGBA on transparent (alpha-correct resize)."""
    if background not in BACKGROUNDS:
        raise InvalidInputError(f"background must be one of {BACKGROUNDS}, not {background!r}")
    full = draw_full(emoji, emoji_font(font_path))
    if background == "white":
        white = Image.new("RGBA", full.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, full).convert("RGB").resize(
            (size, size), Image.Resampling.LANCZOS)
    # Premultiplied alpha while resizing, or transparent pixels' black bleeds into the edges.
    return full.convert("RGBa").resize((size, size), Image.Resampling.LANCZOS).convert("RGBA")


def drawable(emoji: str, font: ImageFont.FreeTypeFont) -> bool:
    """Whether the font draws `emoji` as one glyph (not tofu, not pieces, not the "?" flag)."""
    left, top, right, bottom = font.getbbox(emoji)
    if bottom <= top or right - left > 1.5 * CELL:  # no ink (tofu), or drawn in pieces
        return False
    if emoji[0] == "\U0001f3f4" or "\U0001f1e6" <= emoji[0] <= "\U0001f1ff":
        return draw_full(emoji, font).tobytes() != _unknown_flag(font)
    return True


@cache
def _unknown_flag(font: ImageFont.FreeTypeFont) -> bytes:
    return draw_full(UNKNOWN_FLAG, font).tobytes()


@dataclass(frozen=True)
class _UnicodeEntry:
    group: str
    subgroup: str
    name: str  # CLDR name, e.g. "thumbs up: medium skin tone"


def read_emoji_test(path: Path = EMOJI_TEST) -> dict[str, _UnicodeEntry]:
    """Fully-qualified emoji -> (group, subgroup, CLDR name) from Unicode's emoji-test.txt."""
    entries, group, subgroup = {}, "", ""
    line_re = re.compile(r"^([0-9A-F ]+);\s*fully-qualified\s*#\s*\S+\s+E[\d.]+\s+(.+)$")
    for line in _require(path, "unicode-data").read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif match := line_re.match(line):
            emoji = "".join(chr(int(c, 16)) for c in match.group(1).split())
            entries[emoji] = _UnicodeEntry(group, subgroup, match.group(2).strip())
    return entries


def variant_key(emoji: str) -> str:
    """The emoji without skin tones, VS16, gender/hair/direction parts; people made neutral."""
    parts = emoji.split(ZWJ)
    kept = []
    for part in parts:
        core = "".join(NEUTRAL.get(c, c) for c in part if c not in SKIN_TONES and c != VS16)
        if len(parts) > 1 and (not core or core in VARIANT_PARTS):
            continue
        kept.append(core)
    return "".join(kept) or emoji


def _name_key(entry: _UnicodeEntry | None) -> str | None:
    """"thumbs up: medium skin tone" -> "thumbs up"; flags and keycaps keep their whole name."""
    if entry is None or ":" not in entry.name or entry.name.startswith(("flag:", "keycap:")):
        return None
    return entry.name.split(":", 1)[0]


def _variant_groups(emojis: Sequence[str], tests: dict[str, _UnicodeEntry]) -> dict[str, str]:
    """emoji -> group id: union of emojis sharing a variant key or a CLDR base name."""
    parent = {e: e for e in emojis}

    def find(e: str) -> str:
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    first: dict[tuple[str, str], str] = {}
    for e in emojis:
        for key in (("cp", variant_key(e)), ("name", _name_key(tests.get(e)))):
            if key[1] is None:
                continue
            other = first.setdefault(key, e)  # type: ignore[arg-type]
            a, b = find(e), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the smallest member is the root: deterministic
    return {e: "-".join(f"{ord(c):04X}" for c in find(e)) for e in emojis}


def _lookup(emoji: str, tests: dict[str, _UnicodeEntry]) -> _UnicodeEntry | None:
    """emoji-test's entry, or (for emoji newer than the file) that of its first character."""
    for key in (emoji, emoji.replace(VS16, ""), emoji[0], emoji[0] + VS16):
        if key in tests:
            return tests[key]
    return None


def emoji_items(font_path: Path = EMOJI_FONT, test_path: Path = EMOJI_TEST
                ) -> tuple[EmojiItem, ...]:
    """Every fully-qualified emoji of the emoji package that the font draws, in codepoint order."""
    return _catalog(font_path, test_path)[0]


def left_out(font_path: Path = EMOJI_FONT, test_path: Path = EMOJI_TEST) -> tuple[str, ...]:
    """Fully-qualified emoji of the emoji package that the font cannot draw (newer than it)."""
    return _catalog(font_path, test_path)[1]


@cache
def _catalog(font_path: Path, test_path: Path) -> tuple[tuple[EmojiItem, ...], tuple[str, ...]]:
    import emoji as emoji_pkg

    font = emoji_font(font_path)
    tests = read_emoji_test(test_path)
    names_id = _indonesian_names()
    data = emoji_pkg.EMOJI_DATA
    candidates = sorted(e for e, d in data.items() if d["status"] == FULLY_QUALIFIED)
    ok = {e: drawable(e, font) for e in candidates}
    chosen = [e for e in candidates if ok[e]]
    groups = _variant_groups(chosen, tests)
    items = []
    for e in chosen:
        d, entry = data[e], _lookup(e, tests)
        subgroup = entry.subgroup if entry else ""
        name = shortcode_words(d["en"])
        name_id = shortcode_words(names_id.get(e, ""))
        aliases = tuple(shortcode_words(a) for a in d.get("alias", ()))
        en, aliases = english_captions(name, aliases, subgroup)
        phrase_id = SUBGROUP_PHRASES.get(subgroup, ("", ""))[1]
        ids = [c for c in dict.fromkeys((name_id, phrase_id)) if c]
        items.append(EmojiItem(e, name, name_id, aliases, entry.group if entry else "", subgroup,
                               float(d["E"]), groups[e], en, tuple(ids)))
    return tuple(items), tuple(e for e in candidates if not ok[e])


def _indonesian_names() -> dict[str, str]:
    import json

    import emoji as emoji_pkg

    path = Path(emoji_pkg.__file__).parent / "unicode_codes" / "emoji_id.json"
    return json.loads(path.read_text(encoding="utf-8"))


def item_captions(item: EmojiItem, languages: Sequence[str] = LANGUAGES) -> tuple[str, ...]:
    """The item's captions in `languages`, English first."""
    bad = set(languages) - set(LANGUAGES)
    if bad or not languages:
        raise InvalidInputError(f"languages must be a subset of {LANGUAGES}, got {languages}")
    both = (item.captions_en if "en" in languages else ()) + (
        item.captions_id if "id" in languages else ())
    return tuple(dict.fromkeys(both))  # a name both languages share ("sushi") counts once


def emoji_records(split: str = "train", size: int = 64, languages: Sequence[str] = LANGUAGES,
                  background: str = "white", font_path: Path = EMOJI_FONT) -> list[Record]:
    """Records of one split ("all" for every emoji), each drawn when it is read."""
    return [Record(partial(render_emoji, it.emoji, size, background, font_path),
                   item_captions(it, languages), _row(it) | {"name": it.name})
            for it in emoji_items(font_path) if split in ("all", it.split)]


def _row(item: EmojiItem) -> dict[str, object]:
    """The metadata.jsonl fields of an item (after file_name)."""
    return {"text": item.captions_en[0], "captions": list(item_captions(item)),
            "captions_en": list(item.captions_en), "captions_id": list(item.captions_id),
            "emoji": item.emoji, "codepoints": item.codepoints, "name": item.name,
            "name_id": item.name_id, "aliases": list(item.aliases), "group": item.group,
            "subgroup": item.subgroup, "variant_group": item.variant_group,
            "emoji_version": item.version, "source": "emoji"}


def build_emoji(out: Path, size: int = 64, background: str = "white", limit: int | None = None,
                overwrite: bool = False, font_path: Path = EMOJI_FONT) -> BuildReport:
    """Write the emoji dataset (imagefolder + metadata.jsonl + README card) to `out`."""
    start = time.perf_counter()
    check_image_size(size)
    if background not in BACKGROUNDS:
        raise InvalidInputError(f"background must be one of {BACKGROUNDS}, not {background!r}")
    items = emoji_items(font_path)
    if limit is not None:
        items = items[:limit]
    gone = left_out(font_path)
    images: dict[str, int] = {}
    groups: dict[str, set[str]] = {}
    with ImageFolderWriter(Path(out), overwrite=overwrite) as writer:
        for it in items:
            writer.add(it.split, f"{it.codepoints}.png",
                       render_emoji(it.emoji, size, background, font_path), _row(it))
            images[it.split] = images.get(it.split, 0) + 1
            groups.setdefault(it.split, set()).add(it.variant_group)
        counts = {s: len(g) for s, g in groups.items()}
        writer.finish(emoji_card(images, counts, size, background, font_path, gone))
    return BuildReport(Path(out), images, counts, time.perf_counter() - start, gone)


def emoji_card(images: dict[str, int], groups: dict[str, int], size: int, background: str,
               font_path: Path, left_out: Sequence[str]) -> str:
    """The dataset card (README.md): contents, sources, licences, fields, splits."""
    from gambar import __version__

    v = package_versions(["fonts-noto-color-emoji", "unicode-data"], ["emoji", "pillow"])
    total = sum(images.values())
    rows = "\n".join(f"| {s} | {images.get(s, 0)} | {groups.get(s, 0)} |"
                     for s in ("train", "val", "test"))
    gone = ", ".join(left_out) if left_out else "none"
    return card_header("gambar emoji", "ofl-1.1 (images), bsd-3-clause (names)", LANGUAGES,
                       total) + f"""
# gambar emoji: {total} emoji at {size}x{size}, captioned in English and Indonesian

Every fully-qualified emoji that Noto Color Emoji draws, rendered with Pillow on a {background}
background, with captions from the emoji's names ("a red apple", "apel merah") and its Unicode
subgroup ("a fruit", "buah"). Built offline by gambar {__version__}.

| split | images | variant groups |
|---|---|---|
{rows}

A *variant group* holds the skin-tone, gender, hair and direction variants of one emoji (and names
that share a CLDR base, e.g. all "family: ..." emoji); a group lies in one split only, chosen by a
hash of its key (80/10/10), so test images are never near-duplicates of training ones.

## Sources and licences
- Images: Noto Color Emoji, Debian `fonts-noto-color-emoji` {v["fonts-noto-color-emoji"]}
  (`{font_path}`), (c) Google, **SIL Open Font License 1.1**. Each image is the font's own glyph
  bitmap (136x128, drawn 4 px down on a 136x136 canvas, so the art is centred), scaled with
  Lanczos filtering.
- Names: PyPI `emoji` {v["emoji"]} (BSD-3-Clause): English names and aliases, Indonesian names
  (`emoji_id.json`).
- Groups and subgroups: Unicode `emoji-test.txt`, Debian `unicode-data` {v["unicode-data"]}
  (Unicode License); emoji newer than that file take the subgroup of their first character.
- Rendered with Pillow {v["pillow"]} (libraqm layout, needed for sequences and flags).

## Fields (metadata.jsonl in each split folder: train/, validation/ (gambar's "val"), test/)
`file_name` (codepoints, e.g. `1F34E.png`), `text` (the first English caption), `captions` (all,
English then Indonesian), `captions_en`, `captions_id`, `emoji`, `codepoints`, `name`, `name_id`,
`aliases`, `group`, `subgroup`, `variant_group`, `emoji_version`, `source`.

## Loading
`gambar.data.load_dataset("PATH", split="train")` (a random caption of each image per epoch), or
`datasets.load_dataset("imagefolder", data_dir="PATH")`.

## Held-out combinations
Emoji that name a held-out (colour, shape) pair of the shapes domain (blue heart, black circle,
orange square, large orange diamond, ...) are kept here; `gambar.data.mix` removes them from any
training mix, so that those pairs stay unseen in training.

## Left out
Fully-qualified emoji of the emoji package that this font cannot draw as one glyph (newer than
the font): {gone}.
"""
