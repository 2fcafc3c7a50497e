"""Crafted PNGs for the provenance tests and benchmarks/fuzz.py: any header, any text chunk."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_KINDS = (b"tEXt", b"zTXt", b"iTXt")


def chunk(kind: bytes, data: bytes, *, crc: int | None = None) -> bytes:
    """One PNG chunk: length, type, data, CRC (the right one unless `crc` is given)."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk of a well-formed PNG."""
    out, at = [], len(SIGNATURE)
    while at + 8 <= len(png):
        (length,) = struct.unpack(">I", png[at:at + 4])
        out.append((png[at + 4:at + 8], png[at + 8:at + 8 + length]))
        at += 12 + length
    return out


def text_chunk(text: str, keyword: str = "gambar", kind: bytes = b"tEXt") -> bytes:
    """A tEXt, zTXt (compressed) or iTXt (UTF-8) chunk holding `text`."""
    raw = text.encode("utf-8", "surrogatepass")
    key = keyword.encode("latin-1", "replace")
    body = {b"tEXt": key + b"\0" + raw, b"zTXt": key + b"\0\0" + zlib.compress(raw),
            b"iTXt": key + b"\0\0\0\0\0" + raw}[kind]
    return chunk(kind, body)


def png_of_size(width: int, height: int, text: list[bytes]) -> bytes:
    """A PNG whose header says width x height (one tiny IDAT), with `text` chunks before it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (SIGNATURE + chunk(b"IHDR", ihdr) + b"".join(text)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def with_text(png: bytes, text: str, keyword: str = "gambar", *, kind: bytes = b"tEXt",
              after_idat: bool = False) -> bytes:
    """`png` with its `keyword` text chunk replaced by one holding `text` (before the image
    data, or after it as other tools may write)."""
    kept = [(k, d) for k, d in chunks(png)
            if not (k in TEXT_KINDS and d.startswith(keyword.encode("latin-1") + b"\0"))]
    at = next(i for i, (k, _) in enumerate(kept) if k == (b"IEND" if after_idat else b"IDAT"))
    parts = [chunk(k, d) for k, d in kept]
    parts.insert(at, text_chunk(text, keyword, kind))
    return SIGNATURE + b"".join(parts)


def deep_json(depth: int, kind: str = "list") -> str:
    """JSON nested `depth` levels: [[[...]]] or {"a": {"a": ...}}."""
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth
