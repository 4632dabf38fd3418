"""The markdown index of a figure directory: one section per figure, rewritten in place when a figure is redrawn."""

from __future__ import annotations

from pathlib import Path

HEADER = ("# Figures\n\nWritten by `scripts/visualize.py`; each section names the command that draws the figure "
          "(rerun it to redraw).\n\n")


def read_sections(path: Path) -> dict[str, str]:
    """`## name` sections of an index file, by name."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def update_index(directory: Path, name: str, body: str) -> Path:
    """Put `body` under `## name` in directory/index.md, keeping the other figures' sections (sorted by name)."""
    path = directory / "index.md"
    sections = read_sections(path)
    sections[name] = body.strip()
    path.write_text(HEADER + "".join(f"## {key}\n\n{text}\n\n" for key, text in sorted(sections.items())).rstrip()
                    + "\n")
    return path
