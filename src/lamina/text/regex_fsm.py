"""Regular expressions over characters compiled to automata, for constrained generation.

:func:`compile_regex` parses a practical subset of Python's syntax, builds a Thompson NFA
(one fragment per construct, joined by epsilon edges) and turns it into a DFA by the subset
construction, minimised by Moore's partition refinement; :meth:`DFA.fullmatch` then agrees
with ``re.fullmatch(pattern, text, re.ASCII)``.

Supported: literals, escapes (``\\n \\t \\r \\f \\v \\xHH \\uHHHH`` and escaped punctuation),
``.`` (any character but a newline), classes ``[a-z0-9_]`` and ``[^...]``, ``\\d \\w \\s`` and
their negations ``\\D \\W \\S`` (ASCII meanings), groups ``(...)``, ``(?:...)``,
``(?P<name>...)``, alternation ``|``, and the quantifiers ``? * + {m} {m,} {,n} {m,n}`` (a
trailing ``?``, the lazy form, accepts the same strings). Anchors, backreferences,
lookarounds and flags raise :class:`RegexSyntaxError` naming the construct and its position.

The DFA reads characters through an alphabet partition: the code points are cut at every end
of every range in the pattern, so all characters of one interval move every state alike and
the transition table has one column per interval.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

__all__ = ["DFA", "RegexSyntaxError", "compile_regex", "escape_regex"]

MAX_CODE = 0x10FFFF
MAX_REPEAT = 1000
_DIGITS = ((48, 57),)
_WORD = ((48, 57), (65, 90), (95, 95), (97, 122))
_SPACE = ((9, 13), (32, 32))
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "0": "\0"}
_CLASS_ESCAPES = {"d": (_DIGITS, False), "D": (_DIGITS, True), "w": (_WORD, False), "W": (_WORD, True),
                  "s": (_SPACE, False), "S": (_SPACE, True)}
_ANCHOR_ESCAPES = {"b": "word boundary \\b", "B": "non-boundary \\B", "A": "anchor \\A", "Z": "anchor \\Z",
                   "z": "anchor \\z", "G": "anchor \\G"}


class RegexSyntaxError(ValueError):
    """A pattern outside the supported subset, or malformed; names the construct and its position."""

    def __init__(self, pattern: str, position: int, message: str):
        super().__init__(f"compile_regex: {message} at position {position} in {pattern!r}")
        self.pattern, self.position = pattern, position


Ranges = tuple[tuple[int, int], ...]


def _normalise(ranges) -> Ranges:
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


def _complement(ranges: Ranges) -> Ranges:
    out, start = [], 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE:
        out.append((start, MAX_CODE))
    return tuple(out)


# -- the syntax tree -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Chars:
    ranges: Ranges


@dataclass(frozen=True)
class _Concat:
    parts: tuple


@dataclass(frozen=True)
class _Alternation:
    options: tuple


@dataclass(frozen=True)
class _Repeat:
    node: object
    low: int
    high: int | None        # None: unbounded


class _Parser:
    """Recursive descent: alternation := concat ('|' concat)*; concat := repeat*;
    repeat := atom quantifier?; atom := group | class | escape | '.' | literal."""

    def __init__(self, pattern: str):
        self.pattern, self.i = pattern, 0

    def error(self, message: str, position: int | None = None):
        raise RegexSyntaxError(self.pattern, self.i if position is None else position, message)

    def peek(self) -> str | None:
        return self.pattern[self.i] if self.i < len(self.pattern) else None

    def parse(self):
        node = self.alternation()
        if self.i < len(self.pattern):
            self.error("unbalanced parenthesis ')'")
        return node

    def alternation(self):
        options = [self.concat()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.concat())
        return options[0] if len(options) == 1 else _Alternation(tuple(options))

    def concat(self):
        parts = []
        while self.peek() not in (None, "|", ")"):
            parts.append(self.repeat())
        return parts[0] if len(parts) == 1 else _Concat(tuple(parts))

    def repeat(self):
        node = self.atom()
        bounds = self.quantifier()
        if bounds is None:
            return node
        if self.peek() == "?":           # lazy: the same strings under fullmatch
            self.i += 1
        if self.peek() in ("*", "+", "?") or self._counted() is not None:
            self.error("multiple repeat (a quantifier after a quantifier)")
        return _Repeat(node, *bounds)

    def _counted(self) -> re.Match | None:
        return re.compile(r"\{(\d*)(,(\d*))?\}").match(self.pattern, self.i)

    def quantifier(self) -> tuple[int, int | None] | None:
        char = self.peek()
        if char in ("*", "+", "?"):
            self.i += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
        counted = self._counted()
        if counted is None or (not counted.group(1) and not counted.group(2)) or counted.group(0) == "{,}":
            return None                  # a '{' that starts no count is a literal, as in Python
        low = int(counted.group(1) or 0)
        high = low if counted.group(2) is None else (int(counted.group(3)) if counted.group(3) else None)
        if high is not None and high < low:
            self.error(f"min repeat greater than max repeat in {counted.group(0)!r}")
        if max(low, high or 0) > MAX_REPEAT:
            self.error(f"repeat count above {MAX_REPEAT} in {counted.group(0)!r}")
        self.i = counted.end()
        return low, high

    def atom(self):
        char, start = self.peek(), self.i
        if char in ("*", "+", "?"):
            self.error(f"nothing to repeat before {char!r}")
        if char == "(":
            return self.group()
        if char == "[":
            return self.char_class()
        if char == ".":
            self.i += 1
            return _Chars(_complement(((10, 10),)))
        if char in ("^", "$"):
            self.error(f"unsupported anchor {char!r}")
        if char == "{" and self._counted() is not None and self.quantifier() is not None:
            self.error("nothing to repeat before a {m,n} count", start)
        self.i += 1
        if char == "\\":
            ranges = self.escape(in_class=False)
            return _Chars(ranges)
        return _Chars(((ord(char), ord(char)),))

    def group(self):
        start = self.i
        self.i += 1
        if self.pattern.startswith("?:", self.i):
            self.i += 2
        elif self.pattern.startswith("?P<", self.i):
            end = self.pattern.find(">", self.i)
            if end < 0 or not self.pattern[self.i + 3:end].isidentifier():
                self.error("bad group name in '(?P<'", start)
            self.i = end + 1
        elif self.peek() == "?":
            construct = self.pattern[start:start + 4]
            names = {"(?=": "lookahead", "(?!": "negative lookahead", "(?<=": "lookbehind",
                     "(?<!": "negative lookbehind", "(?P=": "named backreference", "(?#": "comment",
                     "(?>": "atomic group"}
            name = next((n for p, n in names.items() if construct.startswith(p)), "inline flag or extension")
            self.error(f"unsupported {name} {construct!r}", start)
        node = self.alternation()
        if self.peek() != ")":
            self.error("missing ')' for the group opened", start)
        self.i += 1
        return node

    def escape(self, in_class: bool) -> Ranges:
        """The ranges of the escape after a backslash (already read)."""
        start = self.i - 1
        char = self.peek()
        if char is None:
            self.error("bad escape (end of pattern)", start)
        self.i += 1
        if char in _CLASS_ESCAPES:
            ranges, negated = _CLASS_ESCAPES[char]
            return _complement(ranges) if negated else ranges
        if char in _SIMPLE_ESCAPES:
            code = ord(_SIMPLE_ESCAPES[char])
            return ((code, code),)
        if char in "xu":
            width = 2 if char == "x" else 4
            digits = self.pattern[self.i:self.i + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                self.error(f"bad escape \\{char} (needs {width} hex digits)", start)
            self.i += width
            code = int(digits, 16)
            return ((code, code),)
        if char == "b" and in_class:
            return ((8, 8),)
        if char in _ANCHOR_ESCAPES:
            self.error(f"unsupported {_ANCHOR_ESCAPES[char]}", start)
        if char.isdigit():
            self.error(f"unsupported backreference \\{char}", start)
        if char.isascii() and char.isalnum():
            self.error(f"bad escape \\{char}", start)
        return ((ord(char), ord(char)),)

    def char_class(self) -> _Chars:
        start = self.i
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            char = self.peek()
            if char is None:
                self.error("unterminated character class '['", start)
            if char == "]" and not first:
                self.i += 1
                break
            first = False
            low = self.class_item()
            if isinstance(low, tuple):              # \d, \w, \s and negations
                ranges.extend(low)
                continue
            if self.peek() == "-" and self.pattern[self.i + 1:self.i + 2] not in ("]", ""):
                dash = self.i
                self.i += 1
                high = self.class_item()
                if isinstance(high, tuple):
                    self.error("bad character range (a class escape as its end)", dash)
                if high < low:
                    self.error(f"bad character range {chr(low)}-{chr(high)}", dash - 1)
                ranges.append((low, high))
            else:
                ranges.append((low, low))
        ranges = _normalise(ranges)
        return _Chars(_complement(ranges) if negated else ranges)

    def class_item(self) -> int | Ranges:
        """One code point of a class, or the ranges of a class escape."""
        char = self.peek()
        self.i += 1
        if char != "\\":
            return ord(char)
        escape_char = self.peek()
        ranges = self.escape(in_class=True)
        if escape_char in _CLASS_ESCAPES:
            return ranges
        return ranges[0][0]


# -- Thompson's construction -----------------------------------------------------------------
@dataclass
class _NFA:
    epsilon: list[list[int]] = field(default_factory=list)
    edges: list[list[tuple[Ranges, int]]] = field(default_factory=list)

    def state(self) -> int:
        self.epsilon.append([])
        self.edges.append([])
        return len(self.epsilon) - 1

    def build(self, node) -> tuple[int, int]:
        """A fragment (start, end) for ``node``, with no edge leaving ``end`` yet."""
        start, end = self.state(), self.state()
        if isinstance(node, _Chars):
            if node.ranges:
                self.edges[start].append((node.ranges, end))
        elif isinstance(node, _Concat):
            previous = start
            for part in node.parts:
                s, e = self.build(part)
                self.epsilon[previous].append(s)
                previous = e
            self.epsilon[previous].append(end)
        elif isinstance(node, _Alternation):
            for option in node.options:
                s, e = self.build(option)
                self.epsilon[start].append(s)
                self.epsilon[e].append(end)
        else:                               # _Repeat: low copies, then optional or looping ones
            previous = start
            for _ in range(node.low):
                s, e = self.build(node.node)
                self.epsilon[previous].append(s)
                previous = e
            if node.high is None:
                s, e = self.build(node.node)
                self.epsilon[previous].append(s)
                self.epsilon[e].append(s)
                self.epsilon[e].append(end)
            else:
                for _ in range(node.high - node.low):
                    s, e = self.build(node.node)
                    self.epsilon[previous].append(s)
                    self.epsilon[previous].append(end)
                    previous = e
            self.epsilon[previous].append(end)
        return start, end

    def closure(self, states) -> frozenset[int]:
        seen, stack = set(states), list(states)
        while stack:
            for target in self.epsilon[stack.pop()]:
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return frozenset(seen)


# -- the DFA ---------------------------------------------------------------------------------
class DFA:
    """A deterministic automaton over characters: states 0 .. n-1, ``start``, the set
    ``accepting``, and ``transitions[state][interval]`` (-1: dead) over the alphabet
    intervals beginning at ``boundaries``. Only live states (those from which an accepting
    state can be reached) are kept, so -1 means the text can no longer match."""

    def __init__(self, pattern: str, boundaries: list[int], transitions: list[list[int]], accepting: set[int],
                 start: int):
        self.pattern, self.boundaries, self.transitions = pattern, boundaries, transitions
        self.accepting, self.start = frozenset(accepting), start

    @property
    def num_states(self) -> int:
        return len(self.transitions)

    def interval(self, char: str) -> int:
        return bisect.bisect_right(self.boundaries, ord(char)) - 1

    def step(self, state: int, char: str) -> int:
        """The state after reading ``char`` in ``state`` (-1: dead)."""
        return self.transitions[state][self.interval(char)]

    def walk(self, state: int, text: str) -> int:
        """The state after reading ``text`` from ``state`` (-1 as soon as it dies)."""
        for char in text:
            state = self.transitions[state][self.interval(char)]
            if state < 0:
                return -1
        return state

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of ``text`` matches the pattern."""
        state = self.walk(self.start, text) if self.start >= 0 else -1
        return state >= 0 and state in self.accepting

    def __repr__(self) -> str:
        return f"DFA({self.pattern!r}, states={self.num_states}, accepting={len(self.accepting)})"


def _subset_construction(pattern: str, nfa: _NFA, start: int, end: int) -> DFA:
    cuts = {0}
    for edges in nfa.edges:
        for ranges, _ in edges:
            for lo, hi in ranges:
                cuts.update((lo, hi + 1))
    boundaries = sorted(c for c in cuts if c <= MAX_CODE)
    spans = [[(ranges_span(ranges, boundaries), target) for ranges, target in edges] for edges in nfa.edges]
    first = nfa.closure([start])
    index, order, table, closures = {first: 0}, [first], [], {}
    while len(table) < len(order):
        moves: dict[int, set[int]] = {}
        for state in order[len(table)]:
            for intervals, target in spans[state]:
                for i in intervals:
                    moves.setdefault(i, set()).add(target)
        row = [-1] * len(boundaries)
        for i, targets in moves.items():
            key = frozenset(targets)
            if key not in closures:
                closures[key] = nfa.closure(key)
            moved = closures[key]
            if moved not in index:
                index[moved] = len(order)
                order.append(moved)
            row[i] = index[moved]
        table.append(row)
    accepting = {i for i, subset in enumerate(order) if end in subset}
    return _keep_live(pattern, boundaries, table, accepting)


def ranges_span(ranges: Ranges, boundaries: list[int]) -> list[int]:
    """The indices of the alphabet intervals that ``ranges`` cover (each range starts and ends
    on interval boundaries)."""
    out = []
    for lo, hi in ranges:
        out.extend(range(bisect.bisect_right(boundaries, lo) - 1, bisect.bisect_right(boundaries, hi)))
    return out


def _keep_live(pattern: str, boundaries: list[int], table: list[list[int]], accepting: set[int]) -> DFA:
    """Drop the states from which no accepting state is reachable (renumbering the others)."""
    incoming: list[set[int]] = [set() for _ in table]
    for state, row in enumerate(table):
        for target in row:
            if target >= 0:
                incoming[target].add(state)
    live, stack = set(accepting), list(accepting)
    while stack:
        for source in incoming[stack.pop()]:
            if source not in live:
                live.add(source)
                stack.append(source)
    kept = sorted(live)
    new = {old: i for i, old in enumerate(kept)}
    transitions = [[new.get(t, -1) for t in table[old]] for old in kept]
    return _minimise(DFA(pattern, boundaries, transitions, {new[a] for a in accepting}, new.get(0, -1)))


def _minimise(dfa: DFA) -> DFA:
    """Merge equivalent states (Moore's partition refinement): start from the split accepting /
    not accepting, and split classes by the classes their transitions lead to until stable."""
    if dfa.start < 0:
        return dfa
    classes = [int(state in dfa.accepting) for state in range(dfa.num_states)]
    count = len(set(classes))
    while True:
        signatures = [(classes[s], *(classes[t] if t >= 0 else -1 for t in row))
                      for s, row in enumerate(dfa.transitions)]
        numbering = {signature: i for i, signature in enumerate(dict.fromkeys(signatures))}
        classes = [numbering[signature] for signature in signatures]
        if len(numbering) == count:
            break
        count = len(numbering)
    representative = {}
    for state, group in enumerate(classes):
        representative.setdefault(group, state)
    transitions = [[classes[t] if t >= 0 else -1 for t in dfa.transitions[representative[group]]]
                   for group in range(count)]
    return DFA(dfa.pattern, dfa.boundaries, transitions, {classes[a] for a in dfa.accepting}, classes[dfa.start])


def compile_regex(pattern: str) -> DFA:
    """The DFA of ``pattern`` (see the module docstring for the syntax); ``fullmatch``
    semantics. A pattern that matches nothing gives a DFA whose ``start`` is -1."""
    if not isinstance(pattern, str):
        raise TypeError(f"compile_regex: pattern must be a str, got {type(pattern).__name__}")
    nfa = _NFA()
    start, end = nfa.build(_Parser(pattern).parse())
    return _subset_construction(pattern, nfa, start, end)


def escape_regex(text: str) -> str:
    """``text`` as a pattern that matches exactly it (every non-alphanumeric character escaped)."""
    return "".join(c if c.isalnum() or c == "_" else ("\\n" if c == "\n" else "\\" + c) for c in text)
