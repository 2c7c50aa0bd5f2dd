"""The sections of RESULTS.md that other reports own (RESULTS-serve.md,
RESULTS-aio.md): each is copied in between its markers, one heading level
down, by the script that writes the report and by report.py when it
regenerates RESULTS.md, so both stay alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"


@dataclass(frozen=True)
class Section:
    key: str  # its markers' name
    title: str  # its heading in RESULTS.md
    source: Path  # the report it copies

    @property
    def markers(self) -> tuple[str, str]:
        return f"<!-- {self.key}: from {self.source.name} -->", f"<!-- /{self.key} -->"

    def text(self) -> str:
        """The report as a section, between markers ("" if not written yet)."""
        if not self.source.exists():
            return ""
        body = self.source.read_text().splitlines()[1:]  # its title becomes the heading
        shifted = ["#" + line if line.startswith("#") else line for line in body]
        begin, end = self.markers
        return "\n".join([begin, f"## {self.title}", *shifted, end])

    def update(self, path: Path = RESULTS_MD) -> None:
        """Put the section into RESULTS.md in place (or at its end)."""
        if not path.exists():
            return
        text, section = path.read_text(), self.text()
        begin, end = self.markers
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            text = head + section + rest.split(end, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        path.write_text(text)


SERVE = Section("serve", "The static server (issue 12)", HERE / "RESULTS-serve.md")
AIO = Section("aio", "The aio helpers (issue 13)", HERE / "RESULTS-aio.md")
ALL = (SERVE, AIO)
