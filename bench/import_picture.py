"""The package's import picture: its rooms (subpackages) in their tiers, an arrow for each room another imports.

Drawn from the same import analysis `tests/test_architecture.py` checks (no circle, no arrow to a
room of the same or a higher tier), so the picture and the test cannot disagree:

    .venv/bin/python bench/import_picture.py            # writes docs/architecture.png, prints the room graph
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tests.test_architecture import TIERS, import_graph, room_graph, room_of, violations  # noqa: E402


def room_arrows() -> set[tuple[str, str]]:
    """(importing room, imported room) for every import across rooms."""
    graph = import_graph()
    return {(room_of(module), room_of(target)) for module, targets in graph.items() for target, _, _ in targets
            if room_of(module) != room_of(target)}


def draw(arrows: set[tuple[str, str]], out: Path) -> None:
    """Tiers bottom (root) to top (cli); every arrow points down, which is what the architecture test asserts."""
    place: dict[str, tuple[float, float]] = {}
    for level, tier in enumerate(TIERS):
        rooms = sorted(tier)
        for i, room in enumerate(rooms):  # a lone room zig-zags, so long arrows do not run through the rooms between
            x = (i + 1) / (len(rooms) + 1) if len(rooms) > 1 or room == "root" else (0.3 if level % 2 else 0.7)
            place[room] = (x, level)
    fig, ax = plt.subplots(figsize=(7, 9))
    for source, target in sorted(arrows):
        if target == "root":
            continue  # every room imports the root modules: said in the title, not drawn
        (x0, y0), (x1, y1) = place[source], place[target]
        ax.annotate("", xy=(x1, y1 + 0.22), xytext=(x0, y0 - 0.22),
                    arrowprops={"arrowstyle": "->", "color": "#7a8a99", "lw": 0.8, "shrinkA": 0, "shrinkB": 0,
                                "connectionstyle": "arc3,rad=0.12"})
    for room, (x, y) in place.items():
        ax.text(x, y, room if room != "root" else "root modules\n(config, errors, tiling, outputs, tuning, background)",
                ha="center", va="center", fontsize=10 if room != "root" else 8,
                bbox={"boxstyle": "round,pad=0.35", "facecolor": "#e8eef4", "edgecolor": "#46607a"})
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(TIERS) - 0.4)
    ax.axis("off")
    ax.set_title("survey_cracks: rooms and their imports; each arrow points to a lower tier\n(every room also imports the root modules)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    args = parser.parse_args()
    graph = import_graph()
    found = violations(graph)
    if found:
        sys.exit("the package breaks its room order:\n" + "\n".join(found))
    draw(room_arrows(), args.out)
    print(room_graph(graph))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
