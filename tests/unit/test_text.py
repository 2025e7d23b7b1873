"""user_dir/text.py: the one reader of every script; each problem named with file and line."""
import gzip

import pytest

from user_dir.text import TextError, read_lines


@pytest.mark.parametrize("raw, message", [
    (b"ein hund\nk\xe4se\n", r"line 2, column 2: not UTF-8 \(byte 0xE4\)"),
    ("ein hund\n".encode("utf-16"), r"is UTF-16"),
    ("ein hund\nkatze\n".encode("utf-16-le"), r"looks like UTF-16 \(a third or more .* iconv -f utf-16le"),
    ("ein hund\nkatze\n".encode("utf-16-be"), r"looks like UTF-16"),
    ("ein\u2028hund\nkatze\n".encode(), r"line 1, column 4: line break character U\+2028"),
    ("ein\u0085hund\nkatze\n".encode(), r"line 1, column 4: line break character U\+0085"),
    (b"ein\rhund\nkatze\n", r"line 1, column 4: line break character U\+000D"),
    (b"ein hund\nkatze\x0cmaus\n", r"line 2, column 6: line break character U\+000C"),
    (b"ein hund\nkat\x00ze\n", r"line 2, column 4: control character U\+0000"),
    (b"ein \x1b[31mhund\n", r"line 1, column 5: control character U\+001B"),
    (b"ein hund\n\n", r"line 2: empty line$"),
    ("ein hund\n\u200b\u200b\n".encode(), r"line 2: empty line \(only invisible or space characters\)"),
    ("ein hund\n\u00a0\u3000 \t\n".encode(), r"line 2: empty line \(only invisible or space characters\)"),
    (b"", r"is empty"),
])
def test_text_that_would_shift_or_empty_a_pair_is_refused_with_file_and_line(tmp_path, raw, message):
    path = tmp_path / "train.de"
    path.write_bytes(raw)
    with pytest.raises(TextError, match=rf"{path}.*{message}"):
        read_lines(path)


def test_harmless_variants_are_normalised_to_the_same_text(tmp_path):
    """BOM, CRLF endings, invisible characters, a missing final newline, decomposed accents and gzip
    read exactly as the clean file does; tabs, non-breaking spaces and joiners are kept."""
    clean = ["Ein Hund läuft.", "Zwei\tKatzen\u00a0schlafen.", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"]
    (tmp_path / "clean.txt").write_text("".join(line + "\n" for line in clean), encoding="utf-8")
    messy = ("\ufeffEin Hu\u200bnd la\u0308uft.\u200e\r\n" "Zwei\tKatzen\u00a0schla\u00adfen.\r\n"
             "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645")
    (tmp_path / "messy.txt").write_bytes(messy.encode())
    for name in ("messy.txt.gz", "messy-gzip.txt"):  # gzip, whether or not the name says so
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(messy.encode())
    assert read_lines(tmp_path / "clean.txt") == clean
    assert read_lines(tmp_path / "messy.txt") == clean
    assert read_lines(tmp_path / "messy.txt.gz") == clean == read_lines(tmp_path / "messy-gzip.txt")


def test_damaged_gzip_is_named(tmp_path):
    path = tmp_path / "train.de.gz"
    path.write_bytes(gzip.compress(b"ein hund\n" * 100)[:30])
    with pytest.raises(TextError, match=rf"{path}: cannot be read"):
        read_lines(path)


def test_a_system_output_may_hold_empty_translations(tmp_path):
    """evaluate.py's --hyp-out writes an empty translation as an empty line: readers of system
    output (lab/bleu_by_length.py) take it, every other problem is still named."""
    path = tmp_path / "test.hyp"
    path.write_bytes("a dog\n\n\u200b\nthe cat\n".encode())
    assert read_lines(path, empty=True) == ["a dog", "", "", "the cat"]
    path.write_bytes(b"a dog\n\nk\xe4se\n")
    with pytest.raises(TextError, match=r"line 3, column 2: not UTF-8"):
        read_lines(path, empty=True)
