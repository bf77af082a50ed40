"""Slurm node states: every spelling Slurm prints, read as one of Slurm's base states plus flags.

A node's state in slurmctld is a base (the low 4 bits: ``enum node_states``) and flag bits
(``NODE_STATE_*``). Slurm prints it three ways, and seamguard reads all of them:

- complete, ``BASE+FLAG+FLAG`` (``IDLE+DRAIN+MAINTENANCE``): ``node_state_string_complete()``,
  used by ``scontrol show node`` since 21.08; the JSON forms carry the same words as a base plus
  a flag list (openapi v0.0.37/38: ``state`` + ``state_flags``; data_parser v0.0.39+: ``state``
  as one list). Lossless.
- one word plus one marker (``drained*``, ``mix-``, ``boot^``): ``node_state_string()`` (long,
  sinfo ``%T``) and ``node_state_string_compact()`` (short, sinfo ``%t``). The word names the
  most telling flag and hides the base: ``DRAINED`` is printed for IDLE, DOWN, UNKNOWN or FUTURE
  nodes with DRAIN. Here such a word gets the base it is printed for on a node in service
  (IDLE; ALLOCATED for DRAINING and FAILING), which never claims DOWN; the complete form, where
  Slurm prints one, has no such loss.
- before 21.08, ``scontrol`` printed ``node_state_string()`` of the state without CLOUD,
  COMPLETING, DRAIN, FAIL, POWER_SAVE, POWERING_DOWN, then ``+CLOUD``, ``+COMPLETING``,
  ``+DRAIN`` or ``+FAIL``, ``+POWER`` or ``+POWERING_DOWN`` (``DOWN*+DRAIN``, ``MAINT+DRAIN``,
  ``IDLE+CLOUD+POWER``): a word, a marker, then flag words.

Where the table comes from: SchedMD/slurm, ``src/common/slurm_protocol_defs.c``
(``node_state_string``, ``node_state_string_compact``, ``node_state_string_complete`` and the
``node_states[]`` / ``node_state_flags[]`` tables), ``slurm/slurm.h(.in)`` (``enum node_states``,
``NODE_STATE_*``), ``src/api/node_info.c`` (``slurm_sprint_node_table``) and
``src/plugins/data_parser/v0.0.*/parsers.c`` (``NODE_STATES`` flag arrays), at tags
slurm-17-11-13-1, 18-08-9-1, 19-05-8-1, 20-02-7-1, 20-11-9-1, 21-08-8-1, 22-05-8-1, 23-02-7-1,
23-11-11-1, 24-05-8-1, 24-11-7-1, 25-05-8-1, 25-11-7-1, 26-05-3-1; and sinfo(1) "NODE STATE
CODES". The base states are the same seven in all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

# enum node_states, 17.11 to 26.05 (ERROR is unused since 18.08 but still a base).
BASE_STATES = frozenset({"ALLOCATED", "DOWN", "ERROR", "FUTURE", "IDLE", "MIXED", "UNKNOWN"})

# Flag names: node_state_flags[] (complete form, openapi v0.0.37/38 state_flags) and the
# data_parser NODE_STATES arrays (v0.0.39+), which add UNDRAIN, REBOOT_CANCELED, POWER_DRAIN and,
# in v0.0.45, POWER_DOWN_ASAP / POWER_DOWN_FORCE. DYNAMIC is 21.08's name of DYNAMIC_FUTURE; "?"
# is what Slurm prints for a flag bit it has no name for.
FLAG_NAMES = frozenset({
    "BLOCKED", "CLOUD", "COMPLETING", "DRAIN", "DYNAMIC", "DYNAMIC_FUTURE", "DYNAMIC_NORM",
    "EXTERNAL", "FAIL", "INVALID_REG", "MAINTENANCE", "NOT_RESPONDING", "PERFCTRS", "PLANNED",
    "POWER_DOWN", "POWER_DOWN_ASAP", "POWER_DOWN_FORCE", "POWER_DRAIN", "POWER_UP", "POWERED_DOWN",
    "POWERING_DOWN", "POWERING_UP", "REBOOT_CANCELED", "REBOOT_ISSUED", "REBOOT_REQUESTED",
    "RESERVED", "RESUME", "UNDRAIN", "?",
})  # fmt: skip

# Flag words scontrol printed before 21.08 under another name: "+POWER" was NODE_STATE_POWER_SAVE,
# the bit now called POWERED_DOWN.
_LEGACY_FLAGS = {"POWER": "POWERED_DOWN", "POWER_SAVE": "POWERED_DOWN", "CANCEL_REBOOT": "REBOOT_CANCELED"}

# The one-character suffixes node_state_string()/_compact() append (sinfo(1) "NODE STATE CODES").
# "+" only follows ALLOCATED/ALLOC (allocated, and some jobs completing); "-" only MIXED/MIX.
# Before 21.08 "~" was POWER_SAVE and "#" POWER_UP: the same bits as POWERED_DOWN / POWERING_UP.
MARKERS = {
    "*": "NOT_RESPONDING",
    "~": "POWERED_DOWN",
    "#": "POWERING_UP",
    "%": "POWERING_DOWN",
    "!": "POWER_DOWN",
    "$": "MAINTENANCE",
    "@": "REBOOT_REQUESTED",
    "^": "REBOOT_ISSUED",
    "-": "PLANNED",
    "+": "COMPLETING",
}

# Every word node_state_string() (long) and node_state_string_compact() (short) return, with the
# base and flags that word means, and the markers Slurm puts after it (in some release).
_ALL = "$^@#%~!*"
_WORDS: tuple[tuple[tuple[str, ...], str, tuple[str, ...], str], ...] = (
    # (long, short...), base, flags, markers
    (("IDLE",), "IDLE", (), _ALL),
    (("ALLOCATED", "ALLOC"), "ALLOCATED", (), _ALL + "+"),
    (("MIXED", "MIX"), "MIXED", (), _ALL + "-"),
    (("DOWN",), "DOWN", (), _ALL),
    (("FUTURE", "FUTR"), "FUTURE", (), _ALL),
    (("UNKNOWN", "UNK"), "UNKNOWN", (), "*"),
    (("ERROR", "ERR"), "ERROR", (), "$@#~*"),  # 17.11 and before
    # jobs completing on a node that is not ALLOCATED (IDLE or MIXED underneath; never DOWN)
    (("COMPLETING", "COMP"), "IDLE", ("COMPLETING",), _ALL),
    # DRAIN on an IDLE, DOWN, UNKNOWN or FUTURE node
    (("DRAINED", "DRAIN"), "IDLE", ("DRAIN",), _ALL),
    # DRAIN on an ALLOCATED or MIXED node, or one completing jobs
    (("DRAINING", "DRNG"), "ALLOCATED", ("DRAIN",), _ALL),
    # FAIL on a node not ALLOCATED nor completing (IDLE, MIXED before 25.11, DOWN, UNKNOWN)
    (("FAIL",), "IDLE", ("FAIL",), "*"),
    # FAIL on an ALLOCATED node or one completing jobs (MIXED too since 25.11)
    (("FAILING", "FAILG"), "ALLOCATED", ("FAIL",), "*"),
    # maintenance reservation on an IDLE, FUTURE or UNKNOWN node that is not draining
    (("MAINT",), "IDLE", ("MAINTENANCE",), "*"),
    # reboot requested on a node that is not ALLOCATED or MIXED; REBOOT^ / BOOT^: issued
    (("REBOOT", "BOOT"), "IDLE", ("REBOOT_REQUESTED",), "*^"),
    (("RESERVED", "RESV"), "IDLE", ("RESERVED",), ""),
    (("PLANNED", "PLND"), "IDLE", ("PLANNED",), ""),  # 21.08+
    (("PERFCTRS", "NPC"), "IDLE", ("PERFCTRS",), ""),  # before 24.05
    (("BLOCKED", "BLOCK"), "IDLE", ("BLOCKED",), ""),  # 24.05+
    # INVALID_REG wins over everything: the base is not printed at all
    (("INVAL",), "UNKNOWN", ("INVALID_REG",), ""),  # 21.08+
    # printed only when the state is exactly this flag on an UNKNOWN base
    (("RESUME", "RESM"), "UNKNOWN", ("RESUME",), ""),
    (("CLOUD",), "UNKNOWN", ("CLOUD",), ""),  # 20.11+
    (("EXTERNAL", "EXT"), "UNKNOWN", ("EXTERNAL",), ""),  # 25.05+
    (("POWERED_DOWN", "POWERED_DN"), "UNKNOWN", ("POWERED_DOWN",), ""),  # 21.08+
    (("POWERING_UP",), "UNKNOWN", ("POWERING_UP",), ""),  # 21.08+
    (("POWERING_DOWN", "POWRING_DN", "POWRNG_DN"), "UNKNOWN", ("POWERING_DOWN",), ""),
    # Before 21.08 POWER_DOWN/POW_DN was POWER_SAVE (now POWERED_DOWN) and POWER_UP/POW_UP the
    # POWER_UP bit (now POWERING_UP); since then they are the manual power requests. Neither is
    # down, drained or reserved, so the release's meaning changes nothing seamguard decides.
    (("POWER_DOWN", "POW_DN"), "UNKNOWN", ("POWER_DOWN",), ""),
    (("POWER_UP", "POW_UP"), "UNKNOWN", ("POWER_UP",), ""),
    (("REBOOT_ISSUED",), "UNKNOWN", ("REBOOT_ISSUED",), ""),  # 21.08+
    (("CANCEL_REBOOT", "CANC_R"), "UNKNOWN", ("REBOOT_CANCELED",), ""),
    (("UNDRAIN",), "UNKNOWN", ("UNDRAIN",), ""),  # 24.05+
    (("DYNAMIC_FUTURE",), "UNKNOWN", ("DYNAMIC_FUTURE",), ""),  # 25.11+
    (("DYNAMIC_NORM",), "UNKNOWN", ("DYNAMIC_NORM",), ""),  # 25.11+
    # node_state_base_string() of a base outside the enum (openapi "invalid", data_parser "INVALID")
    # and node_state_string()'s last resort: no base is known.
    (("INVALID",), "UNKNOWN", ("INVALID",), ""),
    (("?",), "UNKNOWN", ("?",), ""),
)


@dataclass(frozen=True)
class NodeState:
    base: str  # one of BASE_STATES
    flags: frozenset[str]  # DRAIN, NOT_RESPONDING, MAINTENANCE, RESERVED, ...
    unknown: tuple[str, ...] = ()  # words in the text no Slurm release prints (kept in flags)


def _table() -> dict[str, tuple[str, frozenset[str]]]:
    table: dict[str, tuple[str, frozenset[str]]] = {}
    for words, base, flags, markers in _WORDS:
        for word in words:
            table[word] = (base, frozenset(flags))
            for mark in markers:
                extra = {MARKERS[mark]}
                if word in ("REBOOT", "BOOT") and mark == "^":  # issued replaces requested
                    table[word + mark] = (base, frozenset(extra))
                else:
                    table[word + mark] = (base, frozenset(flags) | extra)
    return table


# Every spelling -> (base, flags): the words above alone and with each marker Slurm gives them.
STATE_TABLE: dict[str, tuple[str, frozenset[str]]] = _table()
WORDS = frozenset(w for words, *_ in _WORDS for w in words)


def _strip_markers(word: str) -> tuple[str, set[str]]:
    flags: set[str] = set()
    while len(word) > 1 and word[-1] in MARKERS and word[-1] != "+":
        flags.add(MARKERS[word[-1]])
        word = word[:-1]
    return word, flags


def _head(word: str) -> NodeState:
    """The first word of a state: a base, a long or short sinfo word, each with markers."""
    if word in STATE_TABLE:
        base, flags = STATE_TABLE[word]
        return NodeState(base, flags)
    bare, marks = _strip_markers(word)
    if bare in STATE_TABLE:  # a known word with a marker Slurm does not print after it
        base, flags = STATE_TABLE[bare]
        return NodeState(base, flags | marks)
    flag = _LEGACY_FLAGS.get(bare, bare)
    # Not a state word: keep the word, invent no base.
    return NodeState("UNKNOWN", frozenset({flag, *marks}), () if flag in FLAG_NAMES else (bare,))


def parse_node_state(text: str) -> NodeState:
    """Any spelling above -> base + flags. ``IDLE+DRAIN+MAINTENANCE``, ``DOWN*+DRAIN``,
    ``drained*``, ``alloc+``, ``MAINT+DRAIN``, ``IDLE+CLOUD+POWER``; case does not matter."""
    raw = text.strip().upper()
    if not raw:
        return NodeState("UNKNOWN", frozenset())
    completing = raw.endswith("+")  # ALLOCATED+ / ALLOC+: the "+" marker, not a separator
    parts = [p.strip() for p in (raw[:-1] if completing else raw).split("+")]
    head = _head(parts[0] + ("+" if completing else ""))
    flags = set(head.flags)
    unknown = list(head.unknown)
    for part in parts[1:]:
        if not part:
            continue
        word, marks = _strip_markers(part)
        word = _LEGACY_FLAGS.get(word, word)
        flags |= marks | {word}
        if word not in FLAG_NAMES:
            unknown.append(word)
    return NodeState(head.base, frozenset(flags), tuple(unknown))


def parse_state_words(words: list[str]) -> NodeState:
    """A JSON state: the base word anywhere in the list (data_parser puts it first), the rest flags.
    openapi v0.0.37/38's lowercase ``state`` plus its ``state_flags`` come here as one list."""
    upper = [w.strip().upper() for w in words if w.strip()]
    base_word = next((w for w in upper if w in BASE_STATES or w == "INVALID"), None)
    rest = [w for w in upper if w != base_word]
    return parse_node_state("+".join([base_word or "UNKNOWN", *rest]))


# Slurm will not run work on a node in these states: it is down, failed or failing, or slurmctld
# rejected its registration (INVALID_REG: it came up with fewer CPUs, less memory or fewer GPUs
# than configured, a classic sign of a lost DIMM or GPU; slurmctld also drains it). ERROR is the
# pre-18.08 error base.
DOWN_BASES = frozenset({"DOWN", "ERROR"})
DOWN_FLAGS = frozenset({"FAIL", "INVALID_REG"})


def is_down(base: str, flags: frozenset[str]) -> bool:
    return base in DOWN_BASES or bool(flags & DOWN_FLAGS)
