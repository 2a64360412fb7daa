"""The seeded fuzzer behind tests/serving/test_fuzz.py: byte-level mutations, outcome bookkeeping
(valid / refused by the project's own error / crash), and guards (quiet third-party loggers, a
memory cap). Every mutation is a pure function of its seed."""

from __future__ import annotations

import contextlib
import math
import re
import struct
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from serving.errors import KerasmedError

BASE_SEED = 6  # issue 6
N_MUTATIONS = 2000  # per target: the acceptance criterion asks for at least 1,000
TARGETS = {"dicom-file": 1, "dicom-series": 2, "nifti": 3, "manifest-csv": 4, "manifest-json": 5,
           "dicom-colour": 7}
REPO = Path(__file__).resolve().parents[2]
# A mutated header may declare a gigantic image; a reader must refuse it, not allocate it. The cap
# turns such an allocation into a MemoryError (a reported crash) instead of a machine brought down.
MEMORY_HEADROOM = 4 << 30

# ---------------------------------------------------------------------------------------------
# The byte-level mutator.

_INTERESTING = (
    [bytes([v]) for v in (0x00, 0x01, 0x7F, 0x80, 0xFF)]
    + [struct.pack(e + "h", v) for e in "<>" for v in (0, -1, 1, 0x7FFF, -0x8000, 0x100)]
    + [struct.pack(e + "i", v) for e in "<>" for v in (0, -1, 0x7FFFFFFF, -0x80000000, 0x10000)]
    + [
        struct.pack(e + "f", v)
        for e in "<>"
        for v in (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e38, 1e-45)
    ]
)
TOKENS = (
    b"", b"0", b"-0", b"-1", b"1e999", b"-1e999", b"NaN", b"nan", b"inf", b"-inf", b"Infinity",
    b"1e-320", b"99999999999999999999999", b"0.0\\0.0", b" ", b"\\", b"\x00", b"x", b"1" * 5000,
)
_NUMBER = re.compile(rb"[-+]?[0-9][0-9.eE+-]*")


def _offset(buf: bytearray, rng: np.random.Generator, hot: int | None, bias: float = 0.75) -> int:
    """A position in `buf`, inside the first `hot` bytes with probability `bias`."""
    if hot and rng.random() < bias:
        return int(rng.integers(min(hot, len(buf))))
    return int(rng.integers(len(buf)))


def _flip(buf, rng, hot):
    where = []
    for _ in range(int(rng.integers(1, 9))):
        o, bit = _offset(buf, rng, hot), int(rng.integers(8))
        buf[o] ^= 1 << bit
        where.append(f"{o}.{bit}")
    return "flip@" + ",".join(where)


def _overwrite(buf, rng, hot):
    o = _offset(buf, rng, hot)
    n = min(int(rng.integers(1, 9)), len(buf) - o)
    buf[o : o + n] = rng.bytes(n)
    return f"overwrite@{o}+{n}"


def _interesting(buf, rng, hot):
    value = _INTERESTING[int(rng.integers(len(_INTERESTING)))]
    o = _offset(buf, rng, hot)
    n = min(len(value), len(buf) - o)
    buf[o : o + n] = value[:n]
    return f"interesting@{o}={value.hex()}"


def _truncate(buf, rng, hot):
    o = _offset(buf, rng, hot, bias=0.5)
    del buf[o:]
    return f"truncate@{o}"


def _delete(buf, rng, hot):
    o, n = _offset(buf, rng, hot), int(rng.integers(1, 65))
    del buf[o : o + n]
    return f"delete@{o}+{n}"


def _duplicate(buf, rng, hot):
    o, n = _offset(buf, rng, hot), int(rng.integers(1, 129))
    chunk = bytes(buf[o : o + n])
    to = _offset(buf, rng, hot)
    buf[to:to] = chunk
    return f"duplicate@{o}+{len(chunk)}->{to}"


def _insert(buf, rng, hot):
    o, n = _offset(buf, rng, hot), int(rng.integers(1, 65))
    buf[o:o] = rng.bytes(n)
    return f"insert@{o}+{n}"


def _token(buf, rng, hot, tokens=TOKENS):
    numbers = list(_NUMBER.finditer(bytes(buf[: hot or len(buf)])))
    if not numbers:
        return _overwrite(buf, rng, hot)
    m = numbers[int(rng.integers(len(numbers)))]
    token = tokens[int(rng.integers(len(tokens)))]
    buf[m.start() : m.end()] = token
    return f"token@{m.start()}:{m.group()[:20]!r}->{token[:20]!r}"


BYTE_OPS = (_flip, _overwrite, _interesting, _truncate, _delete, _duplicate, _insert, _token)


def mutate(data: bytes, rng: np.random.Generator, hot: int | None = None) -> tuple[bytes, list[str]]:
    """Apply 1-3 random byte-level operations to `data`.

    Args:
        data: the seed file's bytes.
        rng: the case's generator (all randomness comes from it).
        hot: length of the header region that most offsets fall in (None: the whole file).

    Returns:
        `(mutated bytes, descriptions of the operations)`.
    """
    buf = bytearray(data)
    ops = []
    for _ in range(int(rng.integers(1, 4))):
        if not buf:
            buf[:] = rng.bytes(int(rng.integers(1, 17)))
            ops.append(f"refill+{len(buf)}")
            continue
        ops.append(BYTE_OPS[int(rng.integers(len(BYTE_OPS)))](buf, rng, hot))
    return bytes(buf), ops


def case_rng(target: str, index: int) -> np.random.Generator:
    return np.random.default_rng([BASE_SEED, TARGETS[target], index])


def _pick(seq, rng):
    return seq[int(rng.integers(len(seq)))]


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Running cases and collecting outcomes.


def _where(err: BaseException) -> str:
    """`file:line` of the innermost project frame of `err` (else the innermost frame)."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(REPO)) and "/.venv/" not in f.filename
            and not f.filename.endswith("test_fuzz.py")]
    frame = (ours or frames)[-1]
    name = Path(frame.filename)
    name = name.relative_to(REPO) if name.is_relative_to(REPO) else name.name
    return f"{name}:{frame.lineno}"


def _rule(err: BaseException) -> str:
    """The rule an error states: its message before "Received", paths and numbers blanked."""
    text = str(err).split("Received")[0]
    text = re.sub(r"`[^`]*/[^`]*`|'[^']*/[^']*'|(?<![\w`'])/[^\s`',:]+", "<path>", text)
    text = re.sub(r"\d+", "#", text)
    return f"{type(err).__name__}: {' '.join(text.split())[:100]}"


class Outcomes:
    """Counts of valid results and refusals by error type; every crash, with its reproducer."""

    def __init__(self, target: str):
        self.target = target
        self.valid = 0
        self.refused: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()  # refusals by rule, to show what was reached
        self.crashes: list[tuple[str, str, str]] = []  # (class, case, message)
        self.warnings: Counter[str] = Counter()
        self.notes: list[str] = []
        self.slowest = (0.0, "")

    @property
    def total(self) -> int:
        return self.valid + sum(self.refused.values()) + len(self.crashes)

    def run(self, case: str, call, check, must_succeed: bool = False) -> None:
        """Run `call()`; a `KerasmedError` is a refusal, any other exception a crash, and a
        result is valid when `check(result)` returns no problem (a string)."""
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            # Warnings are counted, not turned into errors: the contract is about exceptions.
            warnings.simplefilter("always")
            try:
                result = call()
            except KerasmedError as err:
                if must_succeed:
                    self.crashes.append(("valid input refused", case, f"{type(err).__name__}: {err}"))
                else:
                    self.refused[type(err).__name__] += 1
                    self.reasons[_rule(err)] += 1
                result = None
            except Exception as err:  # noqa: BLE001 - any non-contract exception is the finding
                kind = f"{type(err).__name__} at {_where(err)}"
                self.crashes.append((kind, case, f"{type(err).__name__}: {err}"))
                result = None
            else:
                problem = check(result)
                if problem:
                    self.crashes.append(("invalid result", case, problem))
                else:
                    self.valid += 1
        for w in caught:
            self.warnings[f"{w.category.__name__} from {Path(w.filename).name}:{w.lineno}"] += 1
        elapsed = time.perf_counter() - start
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, case)

    def report(self) -> str:
        lines = [
            f"fuzz {self.target}: {self.total} mutations: {self.valid} valid, "
            f"refused {dict(sorted(self.refused.items()))}, {len(self.crashes)} crashes; "
            f"slowest case {self.slowest[0]:.2f} s ({self.slowest[1]})"
        ]
        if self.warnings:
            lines.append(f"  warnings leaked: {dict(self.warnings.most_common())}")
        lines.append(f"  {len(self.reasons)} distinct refusal rules; most frequent:")
        lines.extend(f"    {n:5d}  {rule}" for rule, n in self.reasons.most_common(8))
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)

    def crash_report(self) -> str:
        by_kind: dict[str, list[tuple[str, str]]] = {}
        for kind, case, message in self.crashes:
            by_kind.setdefault(kind, []).append((case, message))
        lines = [f"{len(self.crashes)} of {self.total} {self.target} mutations escaped the error "
                 f"contract, in {len(by_kind)} classes:"]
        for kind, cases in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"- {len(cases)}x {kind}")
            for case, message in cases[:3]:
                lines.append(f"    {case}\n      -> {message[:300]}")
            if len(cases) > 3:
                ids = ", ".join(c.split(" ")[0] for c, _ in cases[3:])
                lines.append(f"    also: {ids[:2000]}")
        return "\n".join(lines)

    def finish(self, capsys) -> None:
        with capsys.disabled():
            print("\n" + self.report())
        assert not self.crashes, self.crash_report()


@contextlib.contextmanager
def quiet(*loggers: str):
    """Silence third-party loggers (pydicom logs every damaged element) for the loop; the
    outcomes, not the log, are what the test checks."""
    import logging

    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL + 1)  # children without a level of their own follow
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


@contextlib.contextmanager
def memory_cap(headroom: int = MEMORY_HEADROOM):
    """Cap this process's address space at its current size plus `headroom` (Linux), so that a
    reader asked by a mutated header for tens of GB fails with MemoryError instead of taking the
    shared machine's memory."""
    try:
        import resource
    except ImportError:  # not POSIX: no cap
        yield
        return
    status = Path("/proc/self/status")
    match = re.search(r"VmSize:\s+(\d+) kB", status.read_text()) if status.exists() else None
    if match is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = int(match.group(1)) * 1024 + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
