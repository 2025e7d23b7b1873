"""One reader for every text file the scripts take (corpora, references, sources to translate).

Each problem is named with its file, line and column, and text that only looks fine is treated
the same way everywhere, so a pair can never be shifted or emptied on its way to fairseq:

* lines end at ``\\n`` (a ``\\r\\n`` ending counts as one); any other character that some tool
  takes as a line break (a lone ``\\r``, U+0085, U+2028, U+2029, vertical tab, form feed,
  U+001C-U+001E) is refused, as is every other control character but the tab;
* bytes that are not UTF-8 are refused (UTF-16 is named as such, with or without its byte order
  mark); gzip files are read whether or not their name ends in .gz;
* invisible format characters (byte order marks, zero-width spaces, direction marks and
  embeddings, soft hyphens, word joiners) are removed; zero-width (non-)joiners, which change
  how some scripts are written, are kept;
* every line is normalised to Unicode NFC;
* a line with nothing visible left (empty, spaces of any kind, only invisible characters) is
  refused, except where the caller allows empty lines (a system's output, ``empty=True``);
* only regular files are read (a folder, FIFO or device is named as such, and never opened,
  so ``/dev/zero`` or a pipe nobody writes cannot hang a run), and a line longer than
  :data:`MAX_LINE_BYTES` is refused as soon as it is seen, so no input can fill the memory.
"""
import gzip
import unicodedata
import zlib
from pathlib import Path

from .errors import Refusal
from .files import not_a_file

LINE_BREAKS = set("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
INVISIBLE = set("\ufeff\u200b\u2060\u00ad\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
BLANK = {"Zs", "Zl", "Zp", "Cc", "Cf"}  # categories with nothing to see


MAX_LINE_BYTES = 1 << 20  # a sentence, even a paragraph, is far shorter


class TextError(Refusal, ValueError):
    """A line or file that is not text of one sentence a line; the message names the file and line."""


def clean_line(line: str, where: str, empty: bool = False) -> str:
    """``line`` normalised (see the module's docstring), or TextError naming ``where``; an empty
    line only where EMPTY allows it (a system's translation may be empty, a sentence may not)."""
    for column, ch in enumerate(line, start=1):
        if ch in LINE_BREAKS:
            raise TextError(f"{where}, column {column}: line break character U+{ord(ch):04X} inside a line "
                            "(other tools would split the line there and shift the pairs)")
        if ch != "\t" and unicodedata.category(ch) == "Cc":
            raise TextError(f"{where}, column {column}: control character U+{ord(ch):04X}")
    text = unicodedata.normalize("NFC", "".join(ch for ch in line if ch not in INVISIBLE))
    if not empty and all(unicodedata.category(ch) in BLANK for ch in text):
        raise TextError(f"{where}: empty line" + (" (only invisible or space characters)" if line else ""))
    return text


def decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TextError(f"{where}, column {e.start + 1}: not UTF-8 (byte 0x{raw[e.start]:02X}); "
                        "convert the file, e.g. iconv -f latin1 -t utf-8") from None


GZIP_MAGIC = b"\x1f\x8b"


def gzipped(path: Path) -> bool:
    """Whether ``path`` is gzip-compressed: it ends in .gz, or begins as gzip files do (a corpus saved
    compressed under a plain name is read, not refused as bytes that are not UTF-8)."""
    if path.suffix == ".gz":
        return True
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def raw_lines(path: Path) -> list[bytes]:
    """The lines of a regular file (gunzipped if it is gzip, :func:`gzipped`) without their ``\\n``,
    each at most :data:`MAX_LINE_BYTES` long, or TextError naming the file."""
    why = not_a_file(path)
    if why is not None:
        raise TextError(f"{path} {why}")
    rows = []
    try:
        with (gzip.open(path, "rb") if gzipped(path) else open(path, "rb")) as f:
            while row := f.readline(MAX_LINE_BYTES + 1):
                if len(row) > MAX_LINE_BYTES:
                    raise TextError(f"{path} line {len(rows) + 1}: longer than {MAX_LINE_BYTES} bytes "
                                    "(not one sentence per line)")
                rows.append(row.removesuffix(b"\n"))
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupted .gz
        raise TextError(f"{path}: cannot be read ({e})") from None
    return rows


def read_lines(path: Path, empty: bool = False) -> list[str]:
    """Every line of a UTF-8 text file (gzip-compressed or not), cleaned by :func:`clean_line`
    (EMPTY: empty lines allowed)."""
    path = Path(path)
    rows = raw_lines(path)
    if rows and rows[0].startswith((b"\xff\xfe", b"\xfe\xff")):
        raise TextError(f"{path} is UTF-16 (it starts with a UTF-16 byte order mark): convert it to UTF-8")
    if rows and rows[0].count(0) * 3 > len(rows[0]):  # Latin text in UTF-16: every other byte zero
        raise TextError(f"{path} looks like UTF-16 (a third or more of its first line's bytes are zero): convert "
                        "it to UTF-8, e.g. iconv -f utf-16le -t utf-8")
    if not rows:
        raise TextError(f"{path} is empty")
    lines = []
    for number, row in enumerate(rows, start=1):
        where = f"{path} line {number}"
        lines.append(clean_line(decode(row.removesuffix(b"\r"), where), where, empty))
    return lines
