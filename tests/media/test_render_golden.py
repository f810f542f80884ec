"""Golden renders of tiny images; every expected string was worked out by hand from ACIP.md 5.2.

Y = (77R + 150G + 29B + 128) >> 8, bucket i = Y >> 2, palette index (i*(n-1) + 31) // 63.
A grey pixel g has Y = g. Nothing here calls the renderer to produce an expectation.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from asciichat_server.media import Compositor, RenderSpec, VideoSource

ESC = "\x1b"
RESET = ESC + "[0m"


def grey_image() -> np.ndarray:
    # 4 wide x 4 tall. Fitted into 4x2 cells (w = round(2*4/4*2) = 4), nearest-neighbour keeps
    # pixel rows 0 and 2; rows 1 and 3 hold values that would change the text if they were sampled.
    g = np.array(
        [
            [0, 100, 200, 255],
            [255, 255, 255, 255],
            [50, 150, 180, 230],
            [0, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    return np.repeat(g[:, :, None], 3, axis=2)


def render(pixels: np.ndarray, **kw) -> bytes:
    spec = RenderSpec(**{"wants_padding": False, **kw})
    return Compositor().render([VideoSource(1, 1, pixels)], spec)


# Buckets for the grey row values: 0->0, 100->25, 200->50, 255->63 / 50->12, 150->37, 180->45, 230->57.
@pytest.mark.parametrize(
    ("palette", "expected"),
    [
        # n=23: idx 0,9,17,22 / 4,13,16,20
        ("   ...',;:clodxkO0KXNWM", " :0M\n.dON"),
        # n=11: idx 0,4,8,10 / 2,6,7,9
        ("   ░░▒▒▓▓██", " ░▓█\n ▒▓█"),
        # n=10: idx 0,4,7,9 / 2,5,6,8
        ("   -=≡≣▰▱◼", " =▰◼\n ≡≣▱"),
        # n=8: idx 0,3,6,7 / 1,4,5,6
        ("   .-+*#", " .*#\n -+*"),
        # n=11 (same indices as blocks)
        ("   ▁▂▃▄▅▆▇█", " ▂▆█\n ▄▅▇"),
        # custom, n=4: idx 0,1,2,3 / 1,2,2,3 (multi-byte UTF-8 characters)
        ("·•●⬤", "·•●⬤\n•●●⬤"),
    ],
)
def test_mono_palettes(palette: str, expected: str) -> None:
    assert render(grey_image(), cols=4, rows=2, palette=palette) == expected.encode()


def test_palette_type_from_capabilities() -> None:
    caps = SimpleNamespace(
        width=4, height=2, color_level=0, render_mode=0, palette_type=6,
        palette_custom="·•●⬤".encode() + b"\0" * 20, wants_padding=0,
    )  # fmt: skip
    spec = RenderSpec.from_capabilities(caps)
    assert spec.palette == "·•●⬤"
    assert Compositor().render([VideoSource(1, 1, grey_image())], spec) == "·•●⬤\n•●●⬤".encode()
    caps.palette_type = 4
    spec = RenderSpec.from_capabilities(caps)
    assert Compositor().render([VideoSource(1, 1, grey_image())], spec) == b" .*#\n -+*"
    caps.palette_type = 0  # unset: the default palette instead of the c41 failure
    assert RenderSpec.from_capabilities(caps).palette == "   ...',;:clodxkO0KXNWM"


R, K, B, W = (255, 0, 0), (0, 0, 0), (0, 0, 255), (255, 255, 255)
G, GY = (0, 255, 0), (128, 128, 128)


def colour_image() -> np.ndarray:
    # 2 wide x 4 tall -> 2x2 cells. One pixel per cell samples rows 0 and 2: (R, K) / (W, W).
    # Half-block uses all four: cell (top, bottom) = (R,B) (K,W) / (W,G) (W,GY).
    return np.array([[R, K], [B, W], [W, W], [G, GY]], dtype=np.uint8)


# Characters: R has Y=77 (bucket 19 -> idx 7 ','), K -> ' ', W has Y=255 -> 'M'.
COLOUR_CASES = [
    # truecolor foreground; the second white cell repeats the colour, so no SGR before it
    (3, 0, f"{ESC}[38;2;255;0;0m,{ESC}[38;2;0;0;0m {RESET}\n{ESC}[38;2;255;255;255mMM{RESET}"),
    (3, 1, f"{ESC}[48;2;255;0;0m,{ESC}[48;2;0;0;0m {RESET}\n{ESC}[48;2;255;255;255mMM{RESET}"),
    # 256: red = cube (5,0,0) = 196, black = 16, white = 231
    (2, 0, f"{ESC}[38;5;196m,{ESC}[38;5;16m {RESET}\n{ESC}[38;5;231mMM{RESET}"),
    (2, 1, f"{ESC}[48;5;196m,{ESC}[48;5;16m {RESET}\n{ESC}[48;5;231mMM{RESET}"),
    # 16: bright red (9) -> 91, black (0) -> 30, bright white (15) -> 97; background 101/40/107
    (1, 0, f"{ESC}[91m,{ESC}[30m {RESET}\n{ESC}[97mMM{RESET}"),
    (1, 1, f"{ESC}[101m,{ESC}[40m {RESET}\n{ESC}[107mMM{RESET}"),
    # half-block: fg = top pixel, bg = bottom pixel, U+2580; only the changed half gets an SGR
    (
        3,
        2,
        f"{ESC}[38;2;255;0;0m{ESC}[48;2;0;0;255m▀{ESC}[38;2;0;0;0m{ESC}[48;2;255;255;255m▀{RESET}\n"
        f"{ESC}[38;2;255;255;255m{ESC}[48;2;0;255;0m▀{ESC}[48;2;128;128;128m▀{RESET}",
    ),
    # 256 half-block: blue = 21, green = 46, grey 128 = grey ramp 232+12 = 244 (exact) beats cube 102
    (
        2,
        2,
        f"{ESC}[38;5;196m{ESC}[48;5;21m▀{ESC}[38;5;16m{ESC}[48;5;231m▀{RESET}\n"
        f"{ESC}[38;5;231m{ESC}[48;5;46m▀{ESC}[48;5;244m▀{RESET}",
    ),
    # 16 half-block: blue -> 4 (0,0,238) bg 44, green -> 10 bg 102, grey 128 -> 8 (127,127,127) bg 100
    (
        1,
        2,
        f"{ESC}[91m{ESC}[44m▀{ESC}[30m{ESC}[107m▀{RESET}\n{ESC}[97m{ESC}[102m▀{ESC}[100m▀{RESET}",
    ),
    # no colour: render modes fall back to plain palette characters (half-block needs colour)
    (0, 0, ", \nMM"),
    (0, 1, ", \nMM"),
    (0, 2, ", \nMM"),
]


@pytest.mark.parametrize(("color_level", "render_mode", "expected"), COLOUR_CASES)
def test_colour_modes(color_level: int, render_mode: int, expected: str) -> None:
    out = render(colour_image(), cols=2, rows=2, color_level=color_level, render_mode=render_mode)
    assert out == expected.encode()
    if color_level:
        assert out.endswith(RESET.encode())
    assert not out.endswith(b"\n")


def test_colour_change_across_rows_restarts_after_reset() -> None:
    # Both rows are all red: SGR once per row (each row ends with a reset), never per cell.
    img = np.array([[R, R, R]] * 2, dtype=np.uint8)  # 3x2 -> w = round(1*3/2*2) = 3 cells, 1 row
    assert render(img, cols=3, rows=1, color_level=3) == f"{ESC}[38;2;255;0;0m,,,{RESET}".encode()


def test_padding_left() -> None:
    # 2x4 image into 7x2 cells: fitted 2x2, left padding (7-2)//2 = 2 spaces, no top padding;
    # padding sits outside the colour so it is never painted.
    spec = RenderSpec(7, 2, color_level=1, wants_padding=True)
    out = Compositor().render([VideoSource(1, 1, colour_image())], spec)
    assert out == f"  {ESC}[91m,{ESC}[30m {RESET}\n  {ESC}[97mMM{RESET}".encode()


def test_padding_top() -> None:
    # 8x2 image into 4x3 cells: w = round(3*8/2*2) = 24 > 4, so (4, round(4/2*2/8)=round(0.5)=1);
    # top padding (3-1)//2 = 1 blank line; columns sampled at x = 0, 2, 4, 6 of row 0.
    row0 = [0, 1, 255, 3, 255, 5, 100, 7]
    img = np.repeat(np.array([row0, [9] * 8], dtype=np.uint8)[:, :, None], 3, axis=2)
    spec = RenderSpec(4, 3, palette="   ...',;:clodxkO0KXNWM", wants_padding=True)
    assert Compositor().render([VideoSource(1, 1, img)], spec) == b"\n MM:"
    no_pad = RenderSpec(4, 3, wants_padding=False)
    assert Compositor().render([VideoSource(1, 1, img)], no_pad) == b" MM:"


def test_nearest_neighbour_downscale_picks_floor_positions() -> None:
    # 6 wide x 2 tall -> 3x1 cells (w = round(1*6/2*2) = 6 > 3 -> (3, round(3/2*2/6) = round(0.5) = 1)),
    # sampled columns floor(x*6/3) = 0, 2, 4.
    img = np.repeat(np.array([[255, 0, 0, 255, 255, 0], [0] * 6], dtype=np.uint8)[:, :, None], 3, axis=2)
    assert render(img, cols=3, rows=1) == b"M M"


def test_rgba_and_bad_image_frames() -> None:
    rgba = bytes([255, 255, 255, 0, 0, 0, 0, 255])  # 2x1 RGBA: white, black
    src = VideoSource.from_image_frame(5, 1, 2, 1, rgba)
    assert src.pixels.shape == (1, 2, 3)
    assert src.pixels.tolist() == [[[255, 255, 255], [0, 0, 0]]]
    with pytest.raises(ValueError, match="expected 6"):
        VideoSource.from_image_frame(5, 1, 2, 1, b"\0" * 5)
    with pytest.raises(ValueError):
        VideoSource.from_image_frame(5, 1, 0, 1, b"")
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ValueError):
            VideoSource(1, 1, bad)
    # RGBA arrays render like their RGB part
    rgba = np.concatenate([grey_image(), np.full((4, 4, 1), 7, np.uint8)], axis=2)
    assert render(rgba, cols=4, rows=2) == b" :0M\n.dON"


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        RenderSpec(0, 10)
    with pytest.raises(ValueError):
        RenderSpec(10, 10, color_level=4)
    with pytest.raises(ValueError):
        RenderSpec(10, 10, render_mode=3)
    caps = SimpleNamespace(width=99999, height=0, color_level=9, render_mode=7, palette_type=1, wants_padding=1)
    spec = RenderSpec.from_capabilities(caps)
    assert (spec.cols, spec.rows, spec.color_level, spec.render_mode) == (4096, 1, 0, 0)


def test_quantisers_match_brute_force_nearest() -> None:
    # Independent brute force over the whole palette for random colours (and the extremes).
    from asciichat_server.media.ansi import rgb_to_16, rgb_to_256

    rng = np.random.default_rng(7)
    px = np.concatenate([rng.integers(0, 256, (300, 3)), [[0, 0, 0], [255, 255, 255], [8, 8, 8], [238, 238, 238]]])
    px = px.astype(np.uint8)
    xterm16 = [
        (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205), (0, 205, 205),
        (229, 229, 229), (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0), (92, 92, 255),
        (255, 0, 255), (0, 255, 255), (255, 255, 255),
    ]  # fmt: skip
    levels = [0, 95, 135, 175, 215, 255]
    palette256 = {
        16 + 36 * r + 6 * g + b: (levels[r], levels[g], levels[b]) for r in range(6) for g in range(6) for b in range(6)
    }
    palette256.update({232 + k: (8 + 10 * k,) * 3 for k in range(24)})

    def dist(a, b):
        return sum((int(x) - int(y)) ** 2 for x, y in zip(a, b))

    got16, got256 = rgb_to_16(px), rgb_to_256(px)
    for p, g16, g256 in zip(px, got16, got256):
        assert dist(p, xterm16[g16]) == min(dist(p, c) for c in xterm16)
        assert dist(p, palette256[int(g256)]) == min(dist(p, c) for c in palette256.values())


def test_no_utf8_client_gets_ascii_only() -> None:
    caps = SimpleNamespace(
        width=4, height=2, color_level=3, render_mode=2, palette_type=2, palette_custom=b"", wants_padding=0,
        utf8_support=0,
    )  # fmt: skip
    spec = RenderSpec.from_capabilities(caps)
    assert spec.palette == "   ...',;:clodxkO0KXNWM" and spec.render_mode == 0
    Compositor().render([VideoSource(1, 1, grey_image())], spec).decode("ascii")
    caps.utf8_support = 1
    spec = RenderSpec.from_capabilities(caps)
    assert spec.palette == "   ░░▒▒▓▓██" and spec.render_mode == 2


def test_custom_palette_control_characters_are_dropped() -> None:
    caps = SimpleNamespace(
        width=4, height=2, color_level=0, render_mode=0, palette_type=6, palette_custom=b" \n\x1b.:#\0junk",
        wants_padding=0,
    )  # fmt: skip
    spec = RenderSpec.from_capabilities(caps)
    assert spec.palette == " .:#"
    # n=4: idx (i*3+31)//63 -> buckets 0,25,50,63 -> 0,1,2,3 / 12,37,45,57 -> 1,2,2,3
    assert Compositor().render([VideoSource(1, 1, grey_image())], spec) == b" .:#\n.::#"
    caps.palette_custom = b"\n\t\x1b\0"
    assert RenderSpec.from_capabilities(caps).palette == "   ...',;:clodxkO0KXNWM"


def test_concurrent_renders_agree() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(9)
    pix = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(4)]
    specs = [RenderSpec(80, 24, color_level=c, render_mode=m) for c in range(4) for m in range(3)]
    expected = {s: Compositor().render([VideoSource(i, 1, p) for i, p in enumerate(pix)], s) for s in specs}
    shared = Compositor(frame_cache_bytes=300_000, tile_cache_bytes=300_000)

    def job(k: int) -> bool:
        spec = specs[k % len(specs)]
        return shared.render([VideoSource(i, 1, p) for i, p in enumerate(pix)], spec) == expected[spec]

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(job, range(120)))
