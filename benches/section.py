"""Replaces one benchmark script's section of docs/performance.md (from its marker line to the
next marker or the end), or appends it: each script in benches/ owns its section.

    python3 benches/section.py docs/performance.md "<!-- benches/NAME.sh -->" < section.md
"""
import sys

path, marker = sys.argv[1], sys.argv[2]
section = marker + "\n" + sys.stdin.read().strip("\n") + "\n"
text = open(path).read()
start = text.find(marker)
if start < 0:
    text = text.rstrip("\n") + "\n\n" + section
else:
    end = text.find("<!-- benches/", start + len(marker))
    rest = "" if end < 0 else "\n" + text[end:]
    text = text[:start] + section + rest
open(path, "w").write(text)
