"""Fuzz cases for the PNG/JPEG reader (see :mod:`fuzz_cases`).

Seeds: the Kermany radiographs (real 8-bit grey PNGs) and the sample lung mask with its sidecar,
re-encoded in every mode the reader handles (16-bit, RGB, RGBA, LA, palette, 1-bit, baseline and
progressive JPEG, EXIF orientation). Mutations: bytes, PNG chunks (with valid CRCs, so that the
decoder gets past its checks: absurd sizes, bit depths, colour types, missing or repeated chunks,
compressed-text and EXIF payloads) and JPEG segments (frame sizes, components, tables, EXIF).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import numpy as np

from fuzz_cases import Builder, Case, byte_variants, link_cases
from fuzz_images import KERMANY, SAMPLE, add_sidecar_cases


@functools.lru_cache
def _zeros(n: int) -> bytes:
    """``n`` zero bytes, deflated (a small chunk that inflates to a lot)."""
    return zlib.compress(bytes(n), 9)


def _encode(im, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _exif(orientation: int, big: bool = False) -> bytes:
    """A TIFF/EXIF block holding one orientation entry."""
    e = "big" if big else "little"
    head = (b"MM\x00\x2a" if big else b"II\x2a\x00") + (8).to_bytes(4, e)
    entry = (274).to_bytes(2, e) + (3).to_bytes(2, e) + (1).to_bytes(4, e) + orientation.to_bytes(2, e) + b"\x00\x00"
    return head + (1).to_bytes(2, e) + entry + (0).to_bytes(4, e)


def raster_seeds() -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of the PNG/JPEG seeds."""
    from PIL import Image

    films = sorted(KERMANY.glob("*.png"))
    real = [(f.name, f.read_bytes()) for f in films[:2]]
    grey = Image.open(films[2]).convert("L").resize((96, 72))
    a = np.asarray(grey)
    seeds = real + [
        ("grey.png", _encode(grey, "PNG")),
        ("grey16.png", _encode(Image.fromarray(a.astype(np.uint16) * 257), "PNG")),
        ("rgb.png", _encode(grey.convert("RGB"), "PNG")),
        ("rgba.png", _encode(grey.convert("RGBA"), "PNG")),
        ("la.png", _encode(grey.convert("LA"), "PNG")),
        ("palette.png", _encode(grey.convert("RGB").quantize(16), "PNG")),
        ("bilevel.png", _encode(grey.convert("1"), "PNG")),
        ("exif3.png", _encode(grey, "PNG", exif=_exif(3))),
        ("grey.jpg", _encode(grey, "JPEG", quality=80)),
        ("rgb.jpg", _encode(grey.convert("RGB"), "JPEG", quality=80)),
        ("progressive.jpg", _encode(grey, "JPEG", progressive=True)),
        ("exif6.jpg", _encode(grey, "JPEG", exif=_exif(6, big=True))),
        ("cmyk.jpg", _encode(grey.convert("CMYK"), "JPEG")),
    ]
    mask = Image.open(SAMPLE / "chest_xray_lungs.png").resize((96, 88), Image.NEAREST)
    seeds.append(("lungs_mask.png", _encode(mask, "PNG")))
    seeds.append(("lungs_mask.jpg", _encode(mask.point(lambda v: 255 if v else 0), "JPEG")))
    return seeds


# ------------------------------------------------------------------------------ PNG chunks
def png_chunks(data: bytes) -> list[list]:
    """``[type, payload]`` of each chunk (no CRC)."""
    out, i = [], 8
    while i + 8 <= len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        out.append([data[i + 4:i + 8], data[i + 8:i + 8 + n]])
        i += 12 + n
    return out


def png_build(chunks: list[list]) -> bytes:
    """A PNG of these chunks, each with a valid CRC."""
    out = [b"\x89PNG\r\n\x1a\n"]
    for t, payload in chunks:
        out.append(struct.pack(">I", len(payload)) + t + payload + struct.pack(">I", zlib.crc32(t + payload)))
    return b"".join(out)


def _ihdr(chunks: list[list], **kw) -> list[list]:
    w, h, depth, colour, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
    vals = {"w": w, "h": h, "depth": depth, "colour": colour, "comp": comp, "filt": filt, "inter": inter}
    vals.update(kw)
    payload = struct.pack(">IIBBBBB", *(vals[k] for k in ("w", "h", "depth", "colour", "comp", "filt", "inter")))
    return [[b"IHDR", payload]] + [list(c) for c in chunks[1:]]


def _without(chunks: list[list], kind: bytes) -> list[list]:
    return [c for c in chunks if c[0] != kind]


def _before_iend(chunks: list[list], *extra: list) -> list[list]:
    return chunks[:-1] + list(extra) + chunks[-1:]


def png_mutations(chunks: list[list]) -> list[tuple[str, list[list]]]:
    """Chunk-level variants of a PNG (each rebuilt with valid CRCs)."""
    w, h = struct.unpack(">II", chunks[0][1][:8])
    out = [(f"IHDR {nw} x {nh}", _ihdr(chunks, w=nw, h=nh))
           for nw, nh in ((0, h), (w, 0), (65535, 65535), (2**31 - 1, 1), (1, 2**31 - 1),
                          (100000, 100000), (w * 2, h), (w, h + 1), (w - 1, h), (2**32 - 1, 2**32 - 1))]
    out += [(f"IHDR bit depth {d}", _ihdr(chunks, depth=d)) for d in (0, 3, 7, 32, 16, 1)]
    out += [(f"IHDR colour type {c}", _ihdr(chunks, colour=c)) for c in (1, 5, 7, 3, 2, 6, 4)]
    out += [("IHDR interlace 1", _ihdr(chunks, inter=1)), ("IHDR interlace 7", _ihdr(chunks, inter=7)),
            ("IHDR compression 1", _ihdr(chunks, comp=1)), ("IHDR filter 1", _ihdr(chunks, filt=1))]
    idat = b"".join(c[1] for c in chunks if c[0] == b"IDAT")
    body = _without(chunks, b"IDAT")
    out += [
        ("no IDAT", body),
        ("no IEND", chunks[:-1]),
        ("no IHDR", chunks[1:]),
        ("IHDR twice", chunks[:1] + chunks),
        ("IEND first", chunks[-1:] + chunks),
        ("IDAT before IHDR", [c for c in chunks if c[0] == b"IDAT"] + _without(chunks, b"IDAT")),
        ("IDAT of 16 MiB of zeros", _before_iend(body, [b"IDAT", _zeros(16 << 20)])),
        ("IDAT of garbage", _before_iend(body, [b"IDAT", bytes(range(256)) * 4])),
        ("IDAT truncated zlib", _before_iend(body, [b"IDAT", idat[: len(idat) // 2]])),
        ("IDAT empty", _before_iend(body, [b"IDAT", b""])),
        ("IDAT split into 1-byte chunks", _before_iend(body, *[[b"IDAT", idat[i:i + 1]] for i in range(min(len(idat), 3000))])),
        ("zTXt of 64 MiB of zeros", _before_iend(chunks, [b"zTXt", b"k\x00\x00" + _zeros(64 << 20)])),
        ("iTXt compressed 32 MiB", _before_iend(chunks, [b"iTXt", b"k\x00\x01\x00\x00\x00" + _zeros(32 << 20)])),
        ("200 zTXt chunks of 1 MiB each", _before_iend(chunks, *[[b"zTXt", b"k%d\x00\x00" % i + _zeros(1 << 20)] for i in range(200)])),
        ("zTXt of garbage", _before_iend(chunks, [b"zTXt", b"k\x00\x00garbage"])),
        ("iCCP of garbage", chunks[:1] + [[b"iCCP", b"p\x00\x00" + b"\x01\x02\x03"]] + chunks[1:]),
        ("iCCP of 64 MiB of zeros", chunks[:1] + [[b"iCCP", b"p\x00\x00" + _zeros(64 << 20)]] + chunks[1:]),
        ("pHYs of zero", chunks[:1] + [[b"pHYs", bytes(9)]] + chunks[1:]),
        ("gAMA of zero", chunks[:1] + [[b"gAMA", bytes(4)]] + chunks[1:]),
        ("sBIT of 5 bytes", chunks[:1] + [[b"sBIT", b"\x09" * 5]] + chunks[1:]),
        ("PLTE of 0 entries", chunks[:1] + [[b"PLTE", b""]] + _without(chunks[1:], b"PLTE")),
        ("PLTE of 300 entries", chunks[:1] + [[b"PLTE", b"\x01\x02\x03" * 300]] + _without(chunks[1:], b"PLTE")),
        ("tRNS of 1000 bytes", _before_iend(chunks[:1] + chunks[1:-1], [b"tRNS", b"\x00" * 1000])),
        ("acTL claiming 2**31 frames", chunks[:1] + [[b"acTL", struct.pack(">II", 2**31, 0)]] + chunks[1:]),
        ("fcTL of garbage", chunks[:1] + [[b"acTL", struct.pack(">II", 2, 0)], [b"fcTL", b"\xff" * 26]] + chunks[1:]),
    ]
    for what, exif in (("orientation 0", _exif(0)), ("orientation 9", _exif(9)), ("orientation 65535", _exif(65535)),
                       ("orientation 8", _exif(8, big=True)), ("garbage", b"II*\x00\xff\xff\xff\xff" + b"\x00" * 8),
                       ("an IFD pointing at itself", b"II*\x00\x08\x00\x00\x00\x01\x00" + _exif(6)[10:22] + b"\x08\x00\x00\x00"),
                       ("an IFD of 65535 entries", b"II*\x00\x08\x00\x00\x00\xff\xff" + b"\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00" * 4),
                       ("a value offset beyond the block", b"II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\xff\xff\xff\x0f\x00\xff\xff\x7f\x00\x00\x00\x00")):
        out.append((f"eXIf {what}", chunks[:1] + [[b"eXIf", exif]] + _without(chunks[1:], b"eXIf")))
    return out


# ------------------------------------------------------------------------------ JPEG segments
def jpeg_segments(data: bytes) -> tuple[list[list], bytes]:
    """``[marker, payload]`` of each segment up to SOS, and the rest (scan data and EOI)."""
    segs, i = [], 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        n = struct.unpack(">H", data[i + 2:i + 4])[0]
        segs.append([marker, data[i + 4:i + 2 + n]])
        i += 2 + n
        if marker == 0xDA:
            break
    return segs, data[i:]


def jpeg_build(segs: list[list], rest: bytes) -> bytes:
    out = [b"\xff\xd8"]
    for marker, payload in segs:
        out.append(bytes([0xFF, marker]) + struct.pack(">H", min(len(payload) + 2, 65535)) + payload)
    return b"".join(out) + rest


def _sof(segs: list[list], **kw) -> list[list]:
    out = []
    for marker, payload in segs:
        if marker in (0xC0, 0xC1, 0xC2):
            p, h, w, n = struct.unpack(">BHHB", payload[:6])
            v = {"p": p, "h": h, "w": w, "n": n, **kw}
            payload = struct.pack(">BHHB", v["p"], v["h"], v["w"], v["n"]) + payload[6:]
        out.append([marker, payload])
    return out


def jpeg_mutations(segs: list[list]) -> list[tuple[str, list[list]]]:
    """Segment-level variants of a JPEG."""
    out = [(f"SOF {h} x {w}", _sof(segs, h=h, w=w)) for h, w in ((0, 96), (72, 0), (65535, 65535), (65000, 1), (1, 1))]
    out += [(f"SOF {n} components", _sof(segs, n=n)) for n in (0, 2, 4, 255)]
    out += [(f"SOF precision {p}", _sof(segs, p=p)) for p in (0, 12, 16)]
    out += [("no SOF", [s for s in segs if s[0] not in (0xC0, 0xC1, 0xC2)]),
            ("no DQT", [s for s in segs if s[0] != 0xDB]),
            ("no DHT", [s for s in segs if s[0] != 0xC4]),
            ("DQT table id 7", [[m, bytes([0x07]) + p[1:]] if m == 0xDB else [m, p] for m, p in segs]),
            ("DHT garbage", [[m, b"\x10" + b"\xff" * 40] if m == 0xC4 else [m, p] for m, p in segs]),
            ("SOS with 5 components", [[m, b"\x05" + p[1:]] if m == 0xDA else [m, p] for m, p in segs]),
            ("SOF twice", [s for s in segs if s[0] in (0xC0, 0xC2)] + segs),
            ("COM of 64 KiB", [[0xFE, b"c" * 65000]] + segs),
            ("APP14 Adobe transform 2", [[0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x02"]] + segs)]
    app1 = [s for s in segs if s[0] != 0xE1]
    for what, exif in (("orientation 0", _exif(0)), ("orientation 9", _exif(9)), ("orientation 2", _exif(2)),
                       ("orientation 7", _exif(7, big=True)), ("garbage", b"\xff" * 30),
                       ("an IFD pointing at itself", b"II*\x00\x08\x00\x00\x00\x01\x00" + _exif(6)[10:22] + b"\x08\x00\x00\x00"),
                       ("a truncated IFD", _exif(6)[:12])):
        out.append((f"APP1 EXIF {what}", app1[:1] + [[0xE1, b"Exif\x00\x00" + exif]] + app1[1:]))
    return out


def raster_cases(root: Path) -> list[Case]:
    """PNG/JPEG inputs (``io.read``), about 380."""
    b = Builder(root, "raster", seed=2)
    seeds = raster_seeds()
    for name, data in seeds:
        if name in ("grey.png", "grey16.png", "palette.png", "lungs_mask.png"):
            for what, chunks in png_mutations(png_chunks(data)):
                if name == "grey.png" or "200 zTXt" not in what:  # a second each: once is enough
                    b.file_case(f"{name}: {what}", name, png_build(chunks))
        if name in ("grey.jpg", "progressive.jpg", "exif6.jpg", "lungs_mask.jpg"):
            segs, rest = jpeg_segments(data)
            for what, s in jpeg_mutations(segs):
                b.file_case(f"{name}: {what}", name, jpeg_build(s, rest))
    n_bytes = max(4, (300 - len(b.cases)) // len(seeds))
    for name, data in seeds:
        for what, out in byte_variants(b.rng, data, 256, n_bytes):
            b.file_case(f"{name}: {what}", name, out)
    png = dict(seeds)["grey.png"]
    b.file_case("PNG under a .jpg name", "film.jpg", png)
    b.file_case("JPEG under a .png name", "film.png", dict(seeds)["grey.jpg"])
    b.file_case("PNG signature only", "film.png", png[:8])
    b.file_case("JPEG SOI/EOI only", "film.jpg", b"\xff\xd8\xff\xd9")
    for opts in ({"as_labels": True}, {"as_labels": False}):
        for name in ("grey.png", "rgb.png", "grey16.png", "grey.jpg", "cmyk.jpg"):
            b.file_case(f"{name} read with {opts}", name, dict(seeds)[name], options=opts)
    good = {"classes": {"1": {"name": "right lung", "colour": "#1f77b4"}, "2": {"name": "left lung"}},
            "geometry": {"spacing": [0.5, 0.5]}}
    add_sidecar_cases(b, "lungs_mask.png", dict(seeds)["lungs_mask.png"], good)
    add_sidecar_cases(b, "grey.jpg", dict(seeds)["grey.jpg"], good)
    link_cases(b, "linked.png", KERMANY / "normal_1427.png")
    return b.cases
