#!/usr/bin/env python3
"""Build the example corpus in benchmarks/corpus/docs/ from the Python 3.11 docs.

What it reads
    The reStructuredText sources of the Python 3.11 documentation as shipped by
    the Debian package ``python3.11-doc``, under
    /usr/share/doc/python3.11/html/_sources/ (files such as
    tutorial/*.rst.txt, reference/datamodel.rst.txt, howto/logging.rst.txt).
    The license text (license.rst.txt) is read to write LICENSE.txt.

What it writes
    docs/python-tutorial.md        tutorial chapters 1-9 (appetite .. classes)
    docs/python-data-model.md      reference: data model + expressions
    docs/python-howtos.md          HOWTOs: sorting, logging, regex, unicode,
                                   descriptors
    docs/python-builtin-types.md   library: built-in functions + the first part
                                   of "Built-in Types" (up to, excluding,
                                   binary sequence types)
    LICENSE.txt                    PSF License Agreement + Zero-Clause BSD text

    It then checks questions.jsonl (hand-written; not generated): every
    answer must occur verbatim in its document at the recorded position.

    Each document is "Markdown-ish" plain text: RST headings become #
    headings, inline roles (:func:`len`, :ref:`text <target>`,
    :class:`~foo.Bar`) become plain text, code and literal blocks become
    fenced blocks, index/label/toctree markup is dropped, admonitions become
    "Note:" / "See also:" paragraphs, version markers become
    "New in version X." sentences.

How to rerun
    sudo apt-get install -y python3.11-doc     # once
    python3 benchmarks/corpus/build_corpus.py  # from the repository root
    (or: python3 build_corpus.py --src DIR --out DIR)

Stdlib only; runs with plain python3 (3.8+). The output is deterministic.
"""

import argparse
import json
import os
import re
import sys
import textwrap

DEFAULT_SRC = "/usr/share/doc/python3.11/html/_sources"
HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "3.11"
RELEASE = "3.11.2"  # version of the python3.11-doc sources (3.11.2-6+deb12u*)

COPYRIGHT = "Copyright © 2001-2023 Python Software Foundation; All Rights Reserved"

# (output file, document title, [(source file, optional stop heading)])
DOCUMENTS = [
    # Chapters 1-9 of the tutorial, in order (the remaining chapters 10-16
    # would push the document over 200k characters).
    (
        "python-tutorial.md",
        f"The Python Tutorial, chapters 1-9 (Python {VERSION})",
        [
            ("tutorial/appetite.rst.txt", None),
            ("tutorial/interpreter.rst.txt", None),
            ("tutorial/introduction.rst.txt", None),
            ("tutorial/controlflow.rst.txt", None),
            ("tutorial/datastructures.rst.txt", None),
            ("tutorial/modules.rst.txt", None),
            ("tutorial/inputoutput.rst.txt", None),
            ("tutorial/errors.rst.txt", None),
            ("tutorial/classes.rst.txt", None),
        ],
    ),
    (
        "python-data-model.md",
        f"The Python Language Reference: Data Model and Expressions (Python {VERSION})",
        [
            ("reference/datamodel.rst.txt", None),
            ("reference/expressions.rst.txt", None),
        ],
    ),
    (
        "python-howtos.md",
        f"Python HOWTOs (Python {VERSION})",
        [
            ("howto/sorting.rst.txt", None),
            ("howto/logging.rst.txt", None),
            ("howto/regex.rst.txt", None),
            ("howto/unicode.rst.txt", None),
            ("howto/descriptor.rst.txt", None),
        ],
    ),
    (
        "python-builtin-types.md",
        f"The Python Standard Library: Built-in Functions and Built-in Types (Python {VERSION})",
        [
            ("library/functions.rst.txt", None),
            # stdtypes is ~210 kB on its own; keep everything before the
            # "Binary Sequence Types" section so the document stays < 200k chars.
            ("library/stdtypes.rst.txt", "Binary Sequence Types"),
        ],
    ),
]

# --------------------------------------------------------------------------
# RST helpers

HEADING_CHARS = set("=-~^\"'*+#.:_`<>")
DIRECTIVE_RE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::(?:\s+(.*))?$")
TARGET_RE = re.compile(r"^\s*\.\.\s+_[^:]*:")
FOOTNOTE_DEF_RE = re.compile(r"^(\s*)\.\.\s+\[(#[\w-]*|\d+)\]\s*(.*)$")
EXPLICIT_RE = re.compile(r"^(\s*)\.\.(\s|$)")
SIMPLE_TABLE_RE = re.compile(r"^\s*=+( +=+)+\s*$")
GRID_BORDER_RE = re.compile(r"^\s*\+([-=]+\+)+\s*$")

DROP_DIRECTIVES = {
    "index",
    "highlight",
    "currentmodule",
    "module",
    "sectionauthor",
    "moduleauthor",
    "toctree",
    "tabularcolumns",
    "testsetup",
    "testcleanup",
    "contents",
    "image",
    "figure",
    "only",
    "raw",
    "include",
    "literalinclude",
    "opcode",
    "cmdoption",
    "envvar",
    "program",
    "option",
    "glossary",
}
CODE_DIRECTIVES = {
    "code-block",
    "sourcecode",
    "code",
    "doctest",
    "testcode",
    "testoutput",
    "productionlist",
    "parsed-literal",
}
ADMONITIONS = {
    "note": "Note:",
    "warning": "Warning:",
    "caution": "Caution:",
    "important": "Important:",
    "tip": "Tip:",
    "hint": "Hint:",
    "attention": "Attention:",
    "danger": "Danger:",
    "error": "Error:",
    "seealso": "See also:",
    "impl-detail": "CPython implementation detail:",
}
OBJECT_PREFIX = {
    "function": "",
    "method": "",
    "attribute": "",
    "data": "",
    "describe": "",
    "object": "",
    "class": "class ",
    "exception": "exception ",
    "classmethod": "classmethod ",
    "staticmethod": "staticmethod ",
    "decorator": "@",
    "decoratormethod": "@",
    "coroutinefunction": "coroutine ",
    "coroutinemethod": "coroutine ",
    "awaitablefunction": "awaitable ",
    "awaitablemethod": "awaitable ",
    "abstractmethod": "abstractmethod ",
    "property": "property ",
}
LANGS = {
    "python3": "python",
    "py": "python",
    "python": "python",
    "pycon": "pycon",
    "none": "",
    "text": "",
    "default": "python",
    "shell": "sh",
    "shell-session": "sh",
    "sh": "sh",
    "bash": "sh",
    "c": "c",
    "ini": "ini",
    "rst": "rst",
    "pytb": "pytb",
    "python-grammar": "",
    "peg": "",
}


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def is_blank(line):
    return not line.strip()


def dedent(lines):
    ind = min((indent_of(l) for l in lines if l.strip()), default=0)
    return [l[ind:] if l.strip() else "" for l in lines]


def is_underline(line, title):
    s = line.rstrip()
    if len(s) < 3 or s[0] not in HEADING_CHARS or s != s[0] * len(s):
        return False
    t = title.rstrip()
    return bool(t) and not t[0].isspace() and len(s) >= len(t) - 2


# --------------------------------------------------------------------------
# label -> title map for :ref:`label`


def build_label_map(src):
    labels = {}
    for root, _dirs, files in os.walk(src):
        for name in files:
            if not name.endswith(".rst.txt"):
                continue
            with open(os.path.join(root, name), encoding="utf-8") as f:
                lines = f.read().splitlines()
            pending = []
            for i, line in enumerate(lines):
                m = re.match(r"^\.\.\s+_([^:`]+):\s*$", line)
                if m:
                    pending.append(m.group(1).strip().lower())
                    continue
                if not line.strip() or not pending:
                    continue
                title = None
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                if is_underline(line, "x" * 3) and i + 2 < len(lines):
                    title = lines[i + 1].strip()  # overlined title
                elif is_underline(nxt, line):
                    title = line.strip()
                if title:
                    for lab in pending:
                        labels.setdefault(lab, title)
                pending = []
    return labels


# --------------------------------------------------------------------------
# inline markup

INLINE_RE = re.compile(
    r"(?P<lit>``(?P<littext>.+?)``)"
    r"|(?P<role>:(?P<rname>[A-Za-z][\w:.+-]*):`(?P<rtext>[^`]+)`)"
    r"|(?P<link>`(?P<ltext>[^`]+)`__?)"
    r"|(?P<interp>`(?P<itext>[^`]+)`)",
    re.S,
)
EXPL_RE = re.compile(r"^(.*?)\s*<([^<>]+)>$", re.S)
FNREF_RE = re.compile(r"\[(#[\w-]*|\d+)\]_")


class Converter:
    def __init__(self, labels):
        self.labels = labels
        self.lang = "python"
        self.fn_named = {}
        self.fn_anon_defs = []
        self.fn_anon_refs = []
        self.subs = {"version": VERSION, "release": RELEASE}

    # ---- footnotes (numbered per source file, as Sphinx does)
    def start_file(self, lines):
        self.lang = "python"
        self.fn_named = {}
        anon = []
        n = 0
        for line in lines:
            m = FOOTNOTE_DEF_RE.match(line)
            if m:
                n += 1
                lab = m.group(2)
                if lab == "#":
                    anon.append(n)
                elif lab.startswith("#"):
                    self.fn_named[lab] = n
                else:
                    self.fn_named[lab] = int(lab)
        self.fn_anon_defs = list(anon)
        self.fn_anon_refs = list(anon)
        self.subs = {"version": VERSION, "release": RELEASE}
        for line in lines:
            m = re.match(r"^\.\.\s+\|([^|]+)\|\s+replace::\s*(.*)$", line)
            if m:
                self.subs[m.group(1)] = m.group(2).strip()

    def footnote_number(self, lab, defs):
        if lab == "#":
            return defs.pop(0) if defs else "?"
        return self.fn_named.get(lab, lab.lstrip("#"))

    # ---- inline text
    def plain(self, text):
        text = FNREF_RE.sub(lambda m: f"[{self.footnote_number(m.group(1), self.fn_anon_refs)}]", text)
        text = re.sub(r"(?<=\s)---(?=\s)", "\u2014", text)
        text = re.sub(r"\\ ", "", text)
        return re.sub(r"\\(.)", r"\1", text)

    def role(self, name, text):
        name = name.split(":")[-1]
        text = re.sub(r"\s*\n\s*", " ", text)
        m = EXPL_RE.match(text)
        if name in ("pep", "rfc"):
            if m:
                return m.group(1)
            return "{} {}".format(name.upper(), text.split("#")[0])
        if m and name != "abbr":
            return self.plain(m.group(1))
        if name in ("ref", "doc"):
            key = text.lower()
            if key in self.labels:
                return self.inline(self.labels[key])
            return text.split("/")[-1].replace("-", " ").replace("_", " ")
        text = text.lstrip("!")
        if text.startswith("~"):
            text = text[1:].split(".")[-1]
        if name in ("file", "samp"):
            text = text.replace("{", "").replace("}", "")
        if name == "sup":
            return "^" + text
        if name in (
            "func",
            "meth",
            "class",
            "attr",
            "data",
            "exc",
            "const",
            "mod",
            "obj",
            "expr",
            "member",
            "type",
            "macro",
            "struct",
        ):
            text = text.lstrip(".")
        return text

    def inline(self, text):
        text = re.sub(r"\|([\w-]+)\|_?", lambda m: self.subs.get(m.group(1), m.group(0)), text)
        out = []
        pos = 0
        for m in INLINE_RE.finditer(text):
            out.append(self.plain(text[pos : m.start()]))
            pos = m.end()
            if m.group("lit"):
                lit = re.sub(r"\s*\n\s*", " ", m.group("littext"))
                out.append(f"``{lit}``" if "`" in lit else f"`{lit}`")
            elif m.group("role"):
                out.append(self.role(m.group("rname"), m.group("rtext")))
            elif m.group("link"):
                t = re.sub(r"\s*\n\s*", " ", m.group("ltext"))
                lm = EXPL_RE.match(t)
                if lm and lm.group(1):
                    out.append(f"{self.plain(lm.group(1))} ({lm.group(2)})")
                elif lm:
                    out.append(lm.group(2))
                else:
                    out.append(self.plain(t))
            else:
                out.append(self.plain(m.group("itext")))
        out.append(self.plain(text[pos:]))
        return "".join(out)

    def inline_lines(self, lines):
        if not lines:
            return []
        return self.inline("\n".join(lines)).split("\n")

    # ---- block structure
    @staticmethod
    def take_block(lines, i, ind):
        """Lines from i while blank or indented more than ind."""
        j = i
        while j < len(lines) and (is_blank(lines[j]) or indent_of(lines[j]) > ind):
            j += 1
        k = j
        while k > i and is_blank(lines[k - 1]):
            k -= 1
        return lines[i:k], j

    def fence(self, body, ind, lang=""):
        pad = " " * ind
        body = dedent(body)
        while body and is_blank(body[0]):
            body = body[1:]
        while body and is_blank(body[-1]):
            body = body[:-1]
        if not body:
            return []
        return [pad + "```" + lang] + [(pad + l) if l else "" for l in body] + [pad + "```", ""]

    def table(self, rows, ind, out_ind=None):
        """Render an RST grid or simple table as a padded Markdown pipe table."""
        rows = [r[ind:] for r in rows]
        header_n = 0
        groups = []  # list of rows; a row is a list of cell texts
        if rows[0].startswith("+"):
            cols = sorted({i for r in rows if GRID_BORDER_RE.match(r) for i, c in enumerate(r) if c == "+"})
            cur = []
            for r in rows[1:]:
                if GRID_BORDER_RE.match(r):
                    if cur:
                        groups.append(self.grid_row(cur, cols))
                    cur = []
                    if "=" in r:
                        header_n = len(groups)
                else:
                    cur.append(r)
        else:
            spans = [m.start() for m in re.finditer(r"=+", rows[0])]
            borders = 0
            for r in rows[1:]:
                if SIMPLE_TABLE_RE.match(r):
                    borders += 1
                    if borders == 1:
                        header_n = len(groups)
                    continue
                if not r.strip() or re.match(r"^\s*-+( +-+)*\s*$", r):
                    continue
                cells = [r[a:b].strip() for a, b in zip(spans, [*spans[1:], len(r) + 1], strict=False)]
                if groups and not cells[0]:
                    groups[-1] = [(g + "\n" + c).strip() for g, c in zip(groups[-1], cells, strict=False)]
                else:
                    groups.append(cells)
            if borders < 2:  # table without a header
                header_n = 0
        if any(c.startswith("| ") for g in groups for c in g):
            return self.line_block_table(groups[header_n:], out_ind)
        groups = [[self.cell(c) for c in g] for g in groups]
        if not groups:
            return []
        ncol = max(len(g) for g in groups)
        groups = [g + [""] * (ncol - len(g)) for g in groups]
        if header_n == 0:
            groups.insert(0, [""] * ncol)
            header_n = 1
        widths = [max(3, max(len(g[c]) for g in groups)) for c in range(ncol)]
        pad = " " * (ind if out_ind is None else out_ind)

        def fmt(g):
            return pad + "| " + " | ".join(c.ljust(w) for c, w in zip(g, widths, strict=False)) + " |"

        out = [fmt(g) for g in groups[:header_n]]
        out.append(pad + "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out += [fmt(g) for g in groups[header_n:]]
        return [""] + [l.rstrip() for l in out] + [""]

    def line_block_table(self, groups, ind):
        """A table whose cells are line blocks (the index of built-in
        functions): render as a list, one item per bold group heading."""
        items = []
        for g in groups:
            for c in g:
                for entry in c.split("\n"):
                    entry = self.inline(entry.lstrip("|").strip())
                    if not entry:
                        continue
                    if entry.startswith("**") or not items:
                        items.append([entry])
                    else:
                        items[-1].append(entry)
        pad = " " * ind
        out = [""]
        for it in items:
            out.append(pad + "- " + it[0] + (": " + ", ".join(it[1:]) if it[1:] else ""))
        return [*out, ""]

    @staticmethod
    def grid_row(lines, cols):
        cells = []
        a = cols[0]
        for b in cols[1:]:
            # merge spanned columns (no "|" at the boundary in this row)
            if any(len(l) > b and l[b] != "|" for l in lines) and b != cols[-1]:
                continue
            cells.append("\n".join(l[a + 1 : b].strip() for l in lines).strip())
            a = b
        return cells

    def cell(self, text):
        text = text.replace("\\\n", "")
        text = re.sub(r"\.\. versionadded:: *(\S+)", r"New in version \1.", text)
        text = re.sub(r"\.\. versionchanged:: *(\S+)", r"Changed in version \1:", text)
        text = self.inline(text.strip())
        text = re.sub(r"\s*\n\s*\n\s*", "; ", text)  # paragraphs inside a cell
        text = re.sub(r"\s*\n\s*", " ", text).strip()
        return text.replace("|", "\\|")

    def convert(self, lines, level_map=None, base_level=1, headings=True, stop=None):
        """Convert a list of RST lines to Markdown-ish lines."""
        out = []
        styles = [] if level_map is None else level_map
        para_ind = 0  # indent of the last paragraph (block quotes are dedented to it)
        i = 0
        n = len(lines)
        while i < n:
            line = lines[i]
            if is_blank(line):
                out.append("")
                i += 1
                continue
            ind = indent_of(line)
            nxt = lines[i + 1] if i + 1 < n else ""

            # headings (top level only)
            if headings and ind == 0:
                title = style = None
                if (
                    is_underline(line, "xxx")
                    and i + 2 < n
                    and is_underline(lines[i + 2], lines[i + 1].strip())
                    and lines[i + 2].strip()[0] == line.strip()[0]
                ):
                    title, style, adv = lines[i + 1].strip(), (line[0], True), 3
                elif is_underline(nxt, line) and not EXPLICIT_RE.match(line) and (i == 0 or is_blank(lines[i - 1])):
                    title, style, adv = line.strip(), (nxt[0], False), 2
                if title is not None:
                    if stop and title.startswith(stop):
                        # keep the file's footnotes, referenced from above
                        rest = lines[i:]
                        fn = [k for k, l in enumerate(rest) if l.strip() == ".. rubric:: Footnotes"]
                        if fn:
                            out += self.convert(rest[fn[-1] :], headings=False)
                        break
                    if style not in styles:
                        styles.append(style)
                    lev = min(6, base_level + styles.index(style))
                    out += ["", "#" * lev + " " + self.inline(title), ""]
                    para_ind = 0
                    i += adv
                    continue

            # explicit markup: directives, targets, footnotes, comments
            if EXPLICIT_RE.match(line):
                m = DIRECTIVE_RE.match(line)
                fm = FOOTNOTE_DEF_RE.match(line)
                block, j = self.take_block(lines, i + 1, ind)
                if m:
                    out += self.directive(m.group(2).lower(), m.group(3) or "", block, ind)
                elif fm:
                    num = self.footnote_number(fm.group(2), self.fn_anon_defs)
                    body = [fm.group(3), *dedent(block)]
                    conv = self.convert(body, headings=False)
                    while conv and not conv[0].strip():
                        conv = conv[1:]
                    if conv:
                        conv[0] = f"[{num}] {conv[0]}"
                    out += [(" " * ind + l) if l else "" for l in conv] + [""]
                # targets (.. _label:) and comments are dropped
                i = j
                continue

            # doctest blocks
            if line.lstrip().startswith(">>>"):
                j = i
                while j < n and not is_blank(lines[j]):
                    j += 1
                out += self.fence(lines[i:j], min(ind, para_ind), "pycon")
                i = j
                continue

            # tables
            if GRID_BORDER_RE.match(line) or SIMPLE_TABLE_RE.match(line):
                j = i + 1
                if GRID_BORDER_RE.match(line):
                    while j < n and lines[j].strip()[:1] in ("+", "|"):
                        j += 1
                else:
                    borders = 1
                    while j < n and borders < 3:
                        if SIMPLE_TABLE_RE.match(lines[j]):
                            borders += 1
                        j += 1
                out += self.table(lines[i:j], ind, min(ind, para_ind))
                i = j
                continue

            # paragraph (or list item) up to the next blank line
            j = i
            while j < n and not is_blank(lines[j]):
                if j > i and EXPLICIT_RE.match(lines[j]):
                    break
                j += 1
            para = lines[i:j]
            para = [re.sub(r"^(\s*)#\. ", r"\g<1>1. ", l) for l in para]
            # field lists / docinfo (":Author: X") -> "Author: X"
            para = [re.sub(r"^(\s*):([A-Za-z][\w ]*):(\s|$)", r"\1\2:\3", l) for l in para]
            literal = para[-1].rstrip().endswith("::")
            if literal:
                last = para[-1].rstrip()
                if last.strip() == "::":
                    para = para[:-1]
                elif last.endswith(" ::"):
                    para[-1] = last[:-3]
                else:
                    para[-1] = last[:-1]
            out += self.inline_lines(para)
            para_ind = ind
            i = j
            if literal:
                pind = indent_of(lines[j - 1])
                k = i
                while k < n and is_blank(lines[k]):
                    k += 1
                if k < n and indent_of(lines[k]) > pind:
                    block, i = self.take_block(lines, k, pind)
                    out += ["", *self.fence(block, pind if para else ind, self.lang)]
                elif k < n and lines[k].lstrip()[:1] in (">",):
                    pass  # quoted literal block: handled as doctest/paragraph
        return out

    def directive(self, name, arg, block, ind):
        pad = " " * ind
        # split block into header part (arg continuation + options) and body
        header, _body = [], block
        k = 0
        while k < len(block) and not is_blank(block[k]):
            k += 1
        header, rest = block[:k], block[k:]
        opts = [h for h in header if re.match(r"^\s*:[\w-]+:(\s|$)", h)]
        nonopts = [h for h in header if h not in opts]

        def body_lines(extra_first=None, use_header=True):
            b = []
            if extra_first:
                b.append(extra_first)
            if use_header:
                b += dedent(nonopts) if nonopts else []
            if b and rest:
                b.append("")
            b += dedent(rest)
            conv = self.convert(b, headings=False)
            while conv and not conv[0].strip():
                conv = conv[1:]
            return [(pad + l) if l.strip() else "" for l in conv]

        if name in ("image", "figure"):
            return [pad + f"(Diagram omitted: {os.path.basename(arg.strip())})", ""]
        if name in DROP_DIRECTIVES:
            if name == "highlight":
                self.lang = LANGS.get(arg.strip(), arg.strip())
            return []
        if name in CODE_DIRECTIVES:
            code = dedent(rest) if not nonopts else dedent([*nonopts, "", *rest])
            if name == "productionlist":
                code = [l.replace("`", "") for l in code]
                lang = ""
            elif name == "parsed-literal":
                code = [self.inline(l) for l in code]
                lang = ""
            elif name in ("doctest", "testcode"):
                lang = "pycon" if any(l.lstrip().startswith(">>>") for l in code) else "python"
            elif name == "testoutput":
                lang = ""
            else:
                lang = LANGS.get(arg.strip(), arg.strip())
            return self.fence(code, ind, lang)
        if name in ADMONITIONS:
            first = arg or None
            conv = body_lines(first)
            if conv and not re.match(r"\s*(```|\||[-*+] |\d+[.)] |`)", conv[0]):
                return [pad + ADMONITIONS[name] + " " + conv[0].lstrip(), *conv[1:], ""]
            return [pad + ADMONITIONS[name], *conv, ""]
        if name in ("admonition", "topic", "sidebar"):
            return [pad + f"**{self.inline(arg.strip())}**", "", *body_lines(), ""]
        if name == "rubric":
            return [pad + f"**{self.inline(arg.strip())}**", ""]
        if name in ("versionadded", "versionchanged", "deprecated", "deprecated-removed"):
            parts = arg.split(None, 1)
            ver = parts[0] if parts else ""
            text = parts[1] if len(parts) > 1 else ""
            if name == "deprecated-removed":
                vv = arg.split(None, 2)
                ver = f"{vv[0]}, will be removed in version {vv[1]}" if len(vv) > 1 else vv[0]
                text = vv[2] if len(vv) > 2 else ""
            lead = {
                "versionadded": "New in version %s",
                "versionchanged": "Changed in version %s",
                "deprecated": "Deprecated since version %s",
                "deprecated-removed": "Deprecated since version %s",
            }[name] % ver
            conv = body_lines(text or None)
            if not conv:
                return [pad + lead + ".", ""]
            conv[0] = pad + lead + ": " + conv[0].lstrip()
            return [*conv, ""]
        if name == "audit-event":
            parts = arg.split()
            ev = parts[0] if parts else ""
            args = [a for a in (parts[1].split(",") if len(parts) > 1 else []) if a]
            if args:
                s = "Raises an auditing event {} with argument{} {}.".format(
                    ev,
                    "s" if len(args) > 1 else "",
                    ", ".join(args),
                )
            else:
                s = f"Raises an auditing event {ev} with no arguments."
            return [pad + s, ""]
        if name in OBJECT_PREFIX or name.startswith(("py:", "c:")):
            kind = name.split(":")[-1]
            prefix = OBJECT_PREFIX.get(kind, "")
            sigs = [arg.rstrip("\\").strip()] + [s.strip().rstrip("\\").strip() for s in nonopts]
            sigs = [s for s in sigs if s]
            out = [pad + f"`{prefix}{s}`" for s in sigs] + [""]
            return out + body_lines(use_header=False) + [""]
        sys.stderr.write(f"warning: unknown directive {name!r} kept as text\n")
        return [*body_lines(arg or None), ""]


# --------------------------------------------------------------------------


def tidy(lines):
    """Strip trailing spaces; collapse blank runs (1 in prose, 2 in code)."""
    out = []
    blanks = 0
    in_code = False
    for line in lines:
        line = line.rstrip()
        if line.lstrip().startswith("```"):
            if not in_code:
                in_code = True
            elif line.strip() == "```":
                in_code = False
        if not line:
            blanks += 1
            if blanks > (2 if in_code else 1):
                continue
        else:
            blanks = 0
        out.append(line)
    while out and not out[0]:
        out.pop(0)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def build_document(conv, src, title, parts):
    out = [
        "# " + title,
        "",
        "*Converted from the Python {} documentation (Debian package "
        "python3.11-doc); sources: {}. {}. Licensed under the PSF License "
        "Agreement; code examples are also available under the Zero-Clause "
        "BSD license.*".format(RELEASE, ", ".join(p[0].replace(".txt", "") for p in parts), COPYRIGHT),
        "",
    ]
    for path, stop in parts:
        with open(os.path.join(src, path), encoding="utf-8") as f:
            lines = f.read().expandtabs(8).splitlines()
        conv.start_file(lines)
        out += conv.convert(lines, base_level=2, stop=stop)
        out.append("")
    return tidy(out)


def build_license(src):
    with open(os.path.join(src, "license.rst.txt"), encoding="utf-8") as f:
        text = f.read()
    out = [
        f"Python {RELEASE} documentation: license texts",
        "",
        f"The documents in docs/ are derived from the Python {RELEASE} documentation",
        "(see README.md for the sources used and a summary of the changes).",
        "",
        "Python and this documentation is:",
        "",
        "Copyright © 2001-2023 Python Software Foundation. All rights reserved.",
        "Copyright © 2000 BeOpen.com. All rights reserved.",
        "Copyright © 1995-2000 Corporation for National Research Initiatives. All rights reserved.",
        "Copyright © 1991-1995 Stichting Mathematisch Centrum. All rights reserved.",
        "",
    ]
    for head in (
        "PSF LICENSE AGREEMENT FOR PYTHON |release|",
        "ZERO-CLAUSE BSD LICENSE FOR CODE IN THE PYTHON |release| DOCUMENTATION",
    ):
        m = re.search(re.escape(head) + r"\n-+\n\n\.\. parsed-literal::\n\n(.*?)\n\n\n", text, re.S)
        if not m:
            raise SystemExit(f"could not find {head!r} in license.rst.txt")
        title = head.replace("|release|", RELEASE)
        out += [title, "-" * len(title), ""]
        out += textwrap.dedent(m.group(1)).replace("|release|", RELEASE).splitlines()
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def check_questions(corpus_dir):
    """Verify questions.jsonl: each answer occurs verbatim in its document,
    at (about) the recorded relative position."""
    path = os.path.join(corpus_dir, "questions.jsonl")
    if not os.path.exists(path):
        return 0
    bad = 0
    with open(path, encoding="utf-8") as f:
        items = [json.loads(l) for l in f if l.strip()]
    for q in items:
        with open(os.path.join(corpus_dir, "docs", q["doc"]), encoding="utf-8") as f:
            text = f.read()
        offs = [m.start() for m in re.finditer(re.escape(q["answer"]), text)]
        if not any(abs(o / len(text) - q["position"]) <= 0.002 for o in offs):
            bad += 1
            print(
                "question {}: answer {!r} not found at position {} in {}".format(
                    q["id"], q["answer"], q["position"], q["doc"]
                )
            )
    print("questions.jsonl: %d questions, %d problems" % (len(items), bad))
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=DEFAULT_SRC, help="Sphinx _sources directory (default: %(default)s)")
    ap.add_argument("--out", default=HERE, help="corpus directory; documents go to OUT/docs (default: %(default)s)")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.src):
        raise SystemExit(f"{args.src} not found; run: apt-get install python3.11-doc")
    conv = Converter(build_label_map(args.src))
    docs_dir = os.path.join(args.out, "docs")
    os.makedirs(docs_dir, exist_ok=True)
    for fname, title, parts in DOCUMENTS:
        text = build_document(conv, args.src, title, parts)
        assert "\x00" not in text
        with open(os.path.join(docs_dir, fname), "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        print("%-26s %8d chars %7d words" % (fname, len(text), len(text.split())))
    with open(os.path.join(args.out, "LICENSE.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(build_license(args.src))
    if check_questions(args.out):
        sys.exit(1)


if __name__ == "__main__":
    main()
