"""The value codec and framing shared by the trusted harness and the untrusted worker.

Values cross the sandbox boundary as JSON built only from exact builtin types (a tagged form for
tuples, sets, dicts with any keys, bytes, complex, big ints and non-finite floats), so nothing the
candidate defines (a class with a forged ``__eq__``, a subclass, a generator) can reach the
process that decides the verdict. The worker runs as ``python -s -S -P -B worker.py`` (no
site-packages, no script directory on sys.path) and loads this file by path before any candidate
code runs, so it must import only the standard library.

Decoding a reply is the one place where the trusted side builds hash tables from data the
candidate chose, so it runs under a budget (:func:`decode_value`'s ``deadline`` and
``max_items``): a set or dict whose elements share one hash value (``k * (2**61 - 1)`` for many
``k``: CPython compares each new element with every earlier one, quadratic) is refused before
it is built (:class:`OverBudget`), and tables are filled in chunks with the deadline checked
between them (:class:`DecodeTimeout`). Forged frames (wrong tags, bad nesting) raise
:class:`ProtocolError`.
"""

from __future__ import annotations

import os
import select
import time

TAG, MAX_DEPTH = "$", 100
_BIG_INT_BITS = 12000  # beyond ~3600 digits: sent as hex (int<->str conversion is capped at 4300)
_STD_DICTS = {"Counter", "OrderedDict", "defaultdict"}
MAX_ITEMS = 1 << 21  # decoded elements per reply (a 4 MiB frame holds at most ~2M)
MAX_SAME_HASH = 16  # distinct elements of one set/dict that may share a hash value
_CHUNK = 512  # elements added to a set/dict between two deadline checks


class Unserializable(Exception):
    """A return value that is not made only of exact builtin types (or is too big/deep)."""


class TooLarge(Unserializable):
    """A value of builtin types whose encoding is above the size limit (see
    :func:`digest_value` for what the worker sends instead)."""


class ProtocolError(Exception):
    """A frame that does not follow the protocol."""


class OverBudget(ProtocolError):
    """A reply that follows the protocol but is too costly to decode: more than ``max_items``
    elements, or a set/dict of elements that collide in one hash value."""


class DecodeTimeout(ProtocolError):
    """Decoding a reply ran past its deadline."""


def _make_codec():
    # Everything the codec uses is bound here, before any candidate code runs, so a candidate
    # that monkeypatches builtins cannot change how its return value is encoded.
    _type, _len, _hex, _isinstance, _list, _dict = type, len, hex, isinstance, list, dict
    _str, _int, _float, _bool, _bytes, _complex = str, int, float, bool, bytes, complex
    _int_repr, _float_repr, _items = int.__repr__, float.__repr__, dict.items
    _fromhex, _inf, _enumerate = bytes.fromhex, float("inf"), enumerate
    _Unser, _Large, _Proto = Unserializable, TooLarge, ProtocolError
    _Budget, _Timeout = OverBudget, DecodeTimeout
    _TypeError, _ValueError = TypeError, ValueError
    _tuple, _set, _frozenset, _zip, _all, _any = tuple, set, frozenset, zip, all, any
    _sorted, _map, _hash = sorted, map, hash
    from _json import encode_basestring_ascii as _esc
    from operator import eq as _eq
    from time import monotonic as _mono

    seqs = {tuple: '{"$":"tuple","v":[', set: '{"$":"set","v":[',
            frozenset: '{"$":"frozenset","v":['}
    builders = {"tuple": tuple, "set": set, "frozenset": frozenset}
    floats = {"inf": _inf, "-inf": -_inf, "nan": _float("nan")}

    def encode(value, limit):
        out, total = [], 0

        def enc(v, depth):
            nonlocal total
            t = _type(v)
            if (t is _str or t is _bytes) and total + _len(v) > limit:
                raise _Large(f"value larger than {limit} bytes")
            if t is _str:
                s = _esc(v)
            elif t is _int:
                s = _int_repr(v) if v.bit_length() <= _BIG_INT_BITS else \
                    '{"$":"int","v":"' + _hex(v) + '"}'
            elif t is _float:
                s = _float_repr(v) if -_inf < v < _inf else '{"$":"float","v":"' + (
                    "nan" if v != v else "inf" if v > 0 else "-inf") + '"}'
            elif v is None or t is _bool:
                s = "null" if v is None else "true" if v else "false"
            elif t is _bytes:
                s = '{"$":"bytes","v":"' + v.hex() + '"}'
            elif depth >= MAX_DEPTH:
                raise _Unser(f"value nested deeper than {MAX_DEPTH} levels")
            elif t is _list or t in seqs:
                out.append("[" if t is _list else seqs[t])
                for i, item in _enumerate(v):
                    if i:
                        out.append(",")
                    enc(item, depth + 1)
                s = "]" if t is _list else "]}"
            elif t is _dict or (_isinstance(v, _dict) and t.__module__ == "collections"
                                and t.__name__ in _STD_DICTS):
                # Counter/OrderedDict/defaultdict compare like their plain-dict contents.
                out.append('{"$":"dict","v":[')
                for i, (key, item) in _enumerate(_items(v)):
                    out.append(",[" if i else "[")
                    enc(key, depth + 1)
                    out.append(",")
                    enc(item, depth + 1)
                    out.append("]")
                s = "]}"
            elif t is _complex:
                out.append('{"$":"complex","v":[')
                enc(v.real, depth + 1)
                out.append(",")
                enc(v.imag, depth + 1)
                s = "]}"
            else:
                raise _Unser(f"cannot send a value of type {t.__module__}.{t.__qualname__}")
            total += _len(s) + 1
            if total > limit:
                raise _Large(f"value larger than {limit} bytes")
            out.append(s)

        enc(value, 0)
        return "".join(out)

    def hashed(items, deadline, what):
        """``items`` (a list) as the keys of a set/dict: refused when more than
        MAX_SAME_HASH of them share one hash value, else yielded in chunks so that the caller
        fills its table between deadline checks."""
        try:
            if _len(items) > MAX_SAME_HASH:
                # Sorting the hashes needs no hash table (which the attack would target).
                hashes = _sorted(_map(_hash, items))
                if _any(_map(_eq, hashes, hashes[MAX_SAME_HASH:])):
                    raise _Budget(f"a {what} of {_len(items)} elements, more than "
                                  f"{MAX_SAME_HASH} of them with one hash value")
        except _TypeError as exc:  # unhashable element
            raise _Proto(f"malformed {what}: {exc}") from None
        for j in range(0, _len(items), _CHUNK):
            if deadline is not None and _mono() > deadline:
                raise _Timeout(f"decoding a {what} of {_len(items)} elements ran past the "
                               "time limit")
            yield items[j:j + _CHUNK]

    def decode(obj, deadline=None, max_items=MAX_ITEMS):
        """A value from its JSON form; ``deadline`` (``time.monotonic``): DecodeTimeout past
        it; more than ``max_items`` decoded elements: OverBudget."""
        left = [max_items]

        def dec(obj, depth):
            t = _type(obj)
            if t is _str or t is _int or t is _float or t is _bool or obj is None:
                return obj
            if depth >= MAX_DEPTH:
                raise _Proto("value nested too deeply")
            if t is _list:
                left[0] -= _len(obj)
                if left[0] < 0:
                    raise _Budget(f"more than {max_items} elements")
                return [dec(x, depth + 1) for x in obj]
            if t is not _dict or _len(obj) != 2 or TAG not in obj or "v" not in obj:
                raise _Proto("malformed value")
            tag, v = obj[TAG], obj["v"]
            try:
                if tag in builders and _type(v) is _list:
                    items = dec(v, depth)
                    if tag == "tuple":
                        return _tuple(items)
                    out = _set()
                    for chunk in hashed(items, deadline, tag):
                        out.update(chunk)
                    return out if tag == "set" else _frozenset(out)
                if tag == "dict" and _type(v) is _list:
                    if not _all(_type(p) is _list and _len(p) == 2 for p in v):
                        raise _Proto("malformed dict")
                    left[0] -= 2 * _len(v)
                    if left[0] < 0:
                        raise _Budget(f"more than {max_items} elements")
                    keys = [dec(p[0], depth + 1) for p in v]
                    values = [dec(p[1], depth + 1) for p in v]
                    out, position = {}, 0
                    for chunk in hashed(keys, deadline, "dict"):
                        out.update(_zip(chunk, values[position:position + _len(chunk)]))
                        position += _len(chunk)
                    return out
                if tag == "complex" and _type(v) is _list and _len(v) == 2:
                    parts = [dec(x, depth + 1) for x in v]
                    if _type(parts[0]) is _float and _type(parts[1]) is _float:
                        return _complex(*parts)
                elif tag == "bytes" and _type(v) is _str:
                    return _fromhex(v)
                elif tag == "float" and _type(v) is _str and v in floats:
                    return floats[v]
                elif tag == "int" and _type(v) is _str and _len(v) < (1 << 22):
                    return _int(v, 16)
            except (_TypeError, _ValueError) as exc:  # unhashable key, bad hex...
                raise _Proto(f"malformed {tag}: {exc}") from None
            raise _Proto(f"malformed value tagged {str(tag)[:50]!r}")

        return dec(obj, 0)

    def bounded_set(items, deadline=None):
        """``set(items)`` under the same budget as a decoded set (the oracles' ``set(out)``)."""
        items = _list(items)
        out = _set()
        for chunk in hashed(items, deadline, "set"):
            out.update(chunk)
        return out

    return encode, decode, bounded_set


encode_value, decode_value, bounded_set = _make_codec()


def _make_framing():
    # Bound before any candidate code runs, as in _make_codec: the worker keeps framing its
    # replies whatever the candidate does to builtins or to the os module.
    _read, _write, _poll, _mono = os.read, os.write, select.poll, time.monotonic
    _POLLIN, _POLLOUT, _Blocking = select.POLLIN, select.POLLOUT, BlockingIOError
    _len, _min, _int, _bytes, _bytearray = len, min, int, bytes, bytearray

    def write_frame(fd, text, remaining_ms=None):
        """Write one length-prefixed frame. ``remaining_ms`` (a non-blocking descriptor):
        returns the milliseconds left to wait for room, raising once there are none."""
        data = text.encode("ascii")  # the encoder escapes everything outside ASCII
        data = _len(data).to_bytes(4, "big") + data
        poll = None
        if remaining_ms is not None:
            poll = _poll()
            poll.register(fd, _POLLOUT)
        while data:
            if poll is not None and not poll.poll(remaining_ms()):
                continue
            try:
                data = data[_write(fd, data):]
            except _Blocking:
                pass

    def read_frame(fd, deadline=None, limit=None):
        """One length-prefixed frame's bytes, or None at EOF, past ``deadline``
        (``time.monotonic``) or when the frame announces more than ``limit`` bytes."""
        poll = None
        if deadline is not None:
            poll = _poll()
            poll.register(fd, _POLLIN)
        buf, want = _bytearray(), 4
        while _len(buf) < want:
            if poll is not None:
                left = deadline - _mono()
                if left <= 0 or not poll.poll(_int(left * 1000) + 1):
                    return None
            chunk = _read(fd, _min(want - _len(buf), 1 << 20))
            if not chunk:
                return None
            buf += chunk
            if want == 4 and _len(buf) == 4:
                want += _int.from_bytes(buf, "big")
                if limit is not None and want > limit:
                    return None
        return _bytes(buf[4:])

    return write_frame, read_frame


write_frame, read_frame = _make_framing()


def _make_digest():
    import hashlib
    import marshal

    _dumps, _sha256 = marshal.dumps, hashlib.sha256

    def digest_value(value) -> str:
        """SHA-256 of ``value`` in marshal format 2, for values too large to send.

        marshal (C code, fast on gigabyte outputs) takes only exact builtin types (no subclass,
        no user class: ValueError) and, unlike pickle or marshal >= 3, writes no back
        references, so equal values of the same types and order give the same digest whatever
        objects they share. Stricter than ``==``: 1 and 1.0 differ, and so do equal sets or
        dicts iterated in different orders.
        """
        return _sha256(_dumps(value, 2)).hexdigest()

    return digest_value


digest_value = _make_digest()
