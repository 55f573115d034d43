"""The home walk that decides "unchanged", "too big" and the drill's sample reads excludes
exactly as duplicity does: checked against duplicity's own glob matching (the installed
duplicity is the reference), on names chosen to trip a homemade glob."""

from __future__ import annotations

import os
import re

import pytest
from duplicity.globmatch import glob_to_regex as duplicity_glob_to_regex

from backup.selection import Selection, glob_regex, literal

PATTERNS = ["**/.cache", "/home/ada/tmp", "/home/ada/notes/*.md", "/home/ada/a?c",
            "/home/ada/[ab]x", "/home/ada/[!ab]y", "/home/ada/[]]z", "/home/ada/un[closed",
            "/home/ada/**/deep", "/home/ada/back\\slash", "/home/ada/dot.txt"]  # fmt: skip
PATHS = ["/home/ada/.cache", "/home/ada/x/y/.cache", "/home/ada/x.cache", "/home/ada/tmp",
         "/home/ada/work/tmp", "/home/ada/tmpfile", "/home/ada/notes/a.md",
         "/home/ada/notes/sub/a.md", "/home/ada/abc", "/home/ada/a/c", "/home/ada/ax",
         "/home/ada/cx", "/home/ada/cy", "/home/ada/ay", "/home/ada/]z", "/home/ada/un[closed",
         "/home/ada/1/2/deep", "/home/ada/back\\slash", "/home/ada/dotXtxt",
         "/home/ada/line\nbreak"]  # fmt: skip


@pytest.mark.parametrize("pattern", PATTERNS)
def test_globs_match_what_duplicitys_own_globs_match(pattern):
    ours = re.compile(f"^{glob_regex(pattern)}($|/)", re.S)
    theirs = re.compile(f"^{duplicity_glob_to_regex(pattern)}($|/)", re.S)
    assert [p for p in PATHS if ours.match(p)] == [p for p in PATHS if theirs.match(p)]


# duplicity's regex for "[[]" makes Python warn of a possible nested set: it matches "[" all
# the same (duplicity prints the warning on its stderr, which hub-backup shows only on failure)
@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
@pytest.mark.parametrize("name", ["big [1]*?.bin", "a]b[", "[!x]", "**", "back\\slash"])
def test_a_literal_matches_only_itself(name):
    theirs = re.compile(f"^{duplicity_glob_to_regex(literal(name))}$", re.S)
    others = ["big 1xy.bin", "ab", "x", "anything", "backslash", "a]b[c"]
    assert theirs.match(name) and not [other for other in others if theirs.match(other)]


def test_the_walk_leaves_out_what_duplicity_leaves_out(tmp_path):
    home = tmp_path / "x[1]"
    for relative in ("tmp/a", "work/tmp/b", ".cache/c", "sub/.cache/d", "notes/a.md",
                     "notes/sub/b.md", "keep"):  # fmt: skip
        (home / relative).parent.mkdir(parents=True, exist_ok=True)
        (home / relative).write_text("x")
    os.symlink("/etc", home / "link")
    selection = Selection(str(home), ["**/.cache", "tmp", "notes/*.md"], 0)
    seen = {relative for relative, _ in selection.walk()}
    assert seen == {"work", "work/tmp", "work/tmp/b", "sub", "notes", "notes/sub",
                    "notes/sub/b.md", "keep", "link"}  # fmt: skip
