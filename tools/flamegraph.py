"""Collapsed stacks in, a flame graph SVG and the top functions by self time out.

Input: the folded format of Brendan Gregg's flamegraph.pl, which
`py-spy record --format raw` writes: one line per distinct stack,
`root;caller;...;leaf COUNT`, frames root first, COUNT the samples that
stack got. Frames are py-spy's `function (file:line)`.

Outputs: `top_self` counts each stack's samples for its leaf frame (the
function on CPU, its self time) and ranks the frames; `format_top` is that
ranking as text for `top.txt`; `render_svg` draws the flame graph (root at
the bottom, each frame as wide as its samples, callers' children side by
side in name order, a frame's `<title>` giving its samples on hover).

One recording gives both, so the summary and the graph always agree, and a
node is sampled by one py-spy, not two (tools/profiler.py).

Pure: no I/O; the same input gives the same bytes (colours come from a CRC
of the frame's name, not from `hash()`).
"""

from __future__ import annotations

import html
import zlib
from typing import Iterator, Mapping

import attrs

Stack = tuple[str, ...]

WIDTH_PX = 1200
FRAME_PX = 16
HEADER_PX = 32
CHAR_PX = 7  # monospace 12px text, about
MIN_FRAME_PX = 0.1  # narrower frames are left out, as flamegraph.pl does
EMPTY_STACK = "(no frames read)"


def parse_collapsed(text: str) -> dict[Stack, int]:
    """`a;b;c 12` lines -> {("a", "b", "c"): 12}; a stack seen twice adds up. A line ` 3` is an
    empty stack: py-spy --nonblocking may read a thread's frames as it changes them, and then
    finds none (or only the innermost few). Raises ValueError on a line without a count."""
    stacks: dict[Stack, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        frames, space, count = line.rstrip().rpartition(" ")
        if not space or not count.isdigit():
            raise ValueError(f"line {number} is not `frame;frame COUNT`: {line!r}")
        stack = tuple(frames.split(";")) if frames else ()
        stacks[stack] = stacks.get(stack, 0) + int(count)
    return stacks


def top_self(stacks: Mapping[Stack, int], count: int = 15) -> list[tuple[str, int]]:
    """The `count` leaf frames with the most samples, most first (ties by name)."""
    self_samples: dict[str, int] = {}
    for stack, samples in stacks.items():
        leaf = stack[-1] if stack else EMPTY_STACK
        self_samples[leaf] = self_samples.get(leaf, 0) + samples
    return sorted(self_samples.items(), key=lambda item: (-item[1], item[0]))[:count]


def format_top(title: str, stacks: Mapping[Stack, int], count: int = 15) -> str:
    """A heading with the sample total, then one `  12.3%  1,234  frame` line per top frame."""
    total = sum(stacks.values())
    lines = [f"== {title}: {total:,} samples, top {count} functions by self time"]
    if not total:
        lines.append("  (no samples: the process was idle or could not be read)")
    for frame, samples in top_self(stacks, count):
        lines.append(f"  {100 * samples / total:5.1f}%  {samples:>6,}  {frame}")
    return "\n".join(lines) + "\n"


@attrs.define(eq=False)
class Frame:
    samples: int = 0
    children: dict[str, "Frame"] = attrs.field(factory=dict)


def build_tree(stacks: Mapping[Stack, int]) -> Frame:
    root = Frame()
    for stack, samples in stacks.items():
        root.samples += samples
        node = root
        for name in stack:
            node = node.children.setdefault(name, Frame())
            node.samples += samples
    return root


def layout(frame: Frame, name: str, depth: int, x: int) -> Iterator[tuple[str, int, int, int]]:
    """(name, depth, first sample, samples) for `frame` and, left to right in name order, its callees."""
    yield name, depth, x, frame.samples
    for child_name in sorted(frame.children):
        child = frame.children[child_name]
        yield from layout(child, child_name, depth + 1, x)
        x += child.samples


def colour(name: str) -> str:
    """A warm colour of its own for each function, the same in every graph."""
    value = zlib.crc32(name.encode())
    return f"rgb({205 + value % 50},{(value >> 8) % 230},{(value >> 16) % 55})"


def render_svg(stacks: Mapping[Stack, int], title: str) -> str:
    root = build_tree(stacks)
    total = max(root.samples, 1)
    frames = [f for f in layout(root, "all", 0, 0) if f[3] * WIDTH_PX / total >= MIN_FRAME_PX]
    depth_max = max((f[1] for f in frames), default=0)
    height = HEADER_PX + (depth_max + 1) * FRAME_PX + 8
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH_PX}" height="{height}" '
        f'viewBox="0 0 {WIDTH_PX} {height}" font-family="monospace" font-size="12">',
        f'<rect width="100%" height="100%" fill="rgb(250,250,240)"/>',
        f'<text x="{WIDTH_PX // 2}" y="20" text-anchor="middle" font-size="15">{html.escape(title)} '
        f'({root.samples:,} samples)</text>',
    ]
    for name, depth, first, samples in frames:
        x = first * WIDTH_PX / total
        width = samples * WIDTH_PX / total
        y = height - 8 - (depth + 1) * FRAME_PX
        fits = int(width / CHAR_PX) - 1
        label = name if len(name) <= fits else (name[:fits - 2] + ".." if fits >= 3 else "")
        out.append(
            f'<g><title>{html.escape(name)} ({samples:,} samples, {100 * samples / total:.2f}%)</title>'
            f'<rect x="{x:.2f}" y="{y}" width="{width:.2f}" height="{FRAME_PX - 1}" fill="{colour(name)}"/>'
            f'<text x="{x + 3:.2f}" y="{y + FRAME_PX - 4}">{html.escape(label)}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
