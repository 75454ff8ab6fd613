"""WordNet 3.0 synsets (Debian package ``wordnet-base``): real text with real classes, offline.

Each synset has lemmas (its words), a gloss (a definition, then example sentences) and one of 45
*lexicographer files* (``noun.animal``, ``verb.motion``, ...), which serve as class labels.
:func:`load_wordnet` parses ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv`` in that
order and in file order, and returns one :class:`Synset` per data line.

The parsing rules, per data line (lines starting with two spaces are the licence header)::

    offset lex_filenum pos w_cnt(hex) lemma lex_id [lemma lex_id ...] p_cnt ... | gloss

* ``lemmas``: the ``w_cnt`` lemma tokens as written (underscores for spaces, adjective markers
  ``(a)``, ``(p)``, ``(ip)`` attached); :attr:`Synset.words` cleans them.
* ``definition``: the gloss up to its first ``;``, stripped.
* ``examples``: the ``;``-separated parts after the definition that start with a double quote,
  without the quotes (32,884 synsets have at least one).

For text retrieval, the fixed protocol uses ``query = definition`` and
``document = ", ".join(words)`` (:attr:`Synset.document`).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tripletkit.data.bundled import DataNotInstalledError

__all__ = [
    "LEXNAMES",
    "WORDNET_DIR",
    "WORDNET_INSTALL",
    "WORDNET_POS_FILES",
    "Synset",
    "lexname_labels",
    "load_wordnet",
    "wordnet_available",
]

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_INSTALL = "sudo apt-get update && sudo apt-get install -y wordnet-base"
WORDNET_POS_FILES: tuple[str, ...] = ("noun", "verb", "adj", "adv")

#: The 45 lexicographer files, indexed by the ``lex_filenum`` field of a data line.
LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)

_ADJECTIVE_MARKER = re.compile(r"\((?:a|p|ip)\)$")


@dataclass(frozen=True)
class Synset:
    """One WordNet synset.

    Attributes:
        offset: byte offset of the line in its data file (unique within a part of speech).
        pos: ``"n"``, ``"v"``, ``"a"``, ``"s"`` (adjective satellite) or ``"r"``.
        lexname_id: index into :data:`LEXNAMES` (0-44), the class label.
        lemmas: the lemma tokens as written in the file.
        definition: the gloss before its first ``;``, stripped.
        examples: the example sentences, without quotes.
        gloss: the whole gloss.
    """

    offset: int
    pos: str
    lexname_id: int
    lemmas: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]
    gloss: str

    @property
    def lexname(self) -> str:
        """The lexicographer file name, e.g. ``"noun.animal"``."""
        return LEXNAMES[self.lexname_id]

    @property
    def key(self) -> str:
        """A unique id: the offset and the part of speech, e.g. ``"02084071-n"``."""
        return f"{self.offset:08d}-{self.pos}"

    @property
    def words(self) -> tuple[str, ...]:
        """Lemmas as words: underscores -> spaces, adjective markers (a), (p), (ip) removed."""
        return tuple(_ADJECTIVE_MARKER.sub("", lemma).replace("_", " ") for lemma in self.lemmas)

    @property
    def document(self) -> str:
        """The retrieval document of the synset: its words joined by ``", "``."""
        return ", ".join(self.words)


def parse_data_line(line: str) -> Synset:
    """Parse one data line of a WordNet ``data.*`` file.

    >>> s = parse_data_line('00019731 00 s 02 handy 0 ready_to_hand(p) 0 002 & 00019131 a 0000 '
    ...                     '+ 04718999 n 0101 | easy to reach; "found a handy spot for the can opener"')
    >>> s.lexname, s.words, s.definition, s.examples
    ('adj.all', ('handy', 'ready to hand'), 'easy to reach', ('found a handy spot for the can opener',))
    """
    head, separator, gloss = line.partition(" | ")
    fields = head.split()
    if not separator or len(fields) < 4:
        raise ValueError(f"not a WordNet data line: {line[:80]!r}")
    word_count = int(fields[3], 16)
    lemmas = tuple(fields[4 + 2 * i] for i in range(word_count))
    gloss = gloss.strip()
    definition, _, rest = gloss.partition(";")
    examples = tuple(
        part.strip().strip('"') for part in rest.split(";") if part.strip().startswith('"')
    )
    return Synset(
        offset=int(fields[0]),
        pos=fields[2],
        lexname_id=int(fields[1]),
        lemmas=lemmas,
        definition=definition.strip(),
        examples=examples,
        gloss=gloss,
    )


def _wordnet_dir(root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(os.environ.get("TRIPLETKIT_WORDNET_DIR", WORDNET_DIR))


def wordnet_available(root: str | os.PathLike[str] | None = None) -> bool:
    """Whether the four WordNet data files are present (in ``root`` or the default folder)."""
    folder = _wordnet_dir(root)
    return all((folder / f"data.{pos}").is_file() for pos in WORDNET_POS_FILES)


@functools.lru_cache(maxsize=8)
def _parse_file(path: str) -> tuple[Synset, ...]:
    synsets = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.startswith("  ") or not line.strip():
                continue
            try:
                synsets.append(parse_data_line(line))
            except ValueError as error:
                raise ValueError(f"{path} line {line_number}: {error}") from error
    return tuple(synsets)


def load_wordnet(
    pos: Sequence[str] = WORDNET_POS_FILES, root: str | os.PathLike[str] | None = None
) -> list[Synset]:
    """WordNet synsets from ``data.<pos>`` files, in the order of ``pos`` and then file order.

    All four files give 117,659 synsets in 45 lexname classes. Parsed files are cached per
    process.

    Args:
        pos: which files, any of ``"noun"``, ``"verb"``, ``"adj"``, ``"adv"``.
        root: the folder of the data files (default ``/usr/share/wordnet`` or
            ``$TRIPLETKIT_WORDNET_DIR``).

    Raises:
        DataNotInstalledError: a data file is missing; the message gives the install command.

    >>> synsets = load_wordnet(["adv"])  # doctest: +SKIP
    >>> synsets[0].lexname, synsets[0].document  # doctest: +SKIP
    ('adv.all', 'a cappella')
    """
    pos = [pos] if isinstance(pos, str) else list(pos)
    unknown = [p for p in pos if p not in WORDNET_POS_FILES]
    if unknown or not pos:
        raise ValueError(f"unknown pos {unknown}; accepted: {', '.join(WORDNET_POS_FILES)}")
    folder = _wordnet_dir(root)
    missing = [f"data.{p}" for p in pos if not (folder / f"data.{p}").is_file()]
    if missing:
        raise DataNotInstalledError(
            f"WordNet is not installed: {', '.join(missing)} not found in {folder}. Install the "
            f"Debian package with: {WORDNET_INSTALL} (or set TRIPLETKIT_WORDNET_DIR)"
        )
    synsets: list[Synset] = []
    for p in pos:
        synsets.extend(_parse_file(str(folder / f"data.{p}")))
    return synsets


def lexname_labels(synsets: Sequence[Synset]) -> np.ndarray:
    """``(N,)`` int64 lexname ids of ``synsets`` (class labels; names in :data:`LEXNAMES`).

    >>> s = parse_data_line("00001740 03 n 01 entity 0 000 | that which is perceived")
    >>> lexname_labels([s, s])
    array([3, 3])
    """
    return np.fromiter((s.lexname_id for s in synsets), dtype=np.int64, count=len(synsets))
