"""The value codec and framing shared by the trusted harness and the untrusted worker.

Values cross the sandbox boundary as JSON built only from exact builtin types (a tagged form for
tuples, sets, dicts with any keys, bytes, complex, big ints and non-finite floats), so nothing the
candidate defines (a class with a forged ``__eq__``, a subclass, a generator) can reach the
process that decides the verdict. The worker runs as ``python -s -S -P -B worker.py`` (no
site-packages, no script directory on sys.path) and loads this file by path before any candidate
code runs, so it must import only the standard library.
"""

from __future__ import annotations

import os

TAG, MAX_DEPTH = "$", 100
_BIG_INT_BITS = 12000  # beyond ~3600 digits: sent as hex (int<->str conversion is capped at 4300)
_STD_DICTS = {"Counter", "OrderedDict", "defaultdict"}
class Unserializable(Exception):
    """A return value that is not made only of exact builtin types (or is too big/deep)."""


class TooLarge(Unserializable):
    """A value of builtin types whose encoding is above the size limit (see
    :func:`digest_value` for what the worker sends instead)."""


class ProtocolError(Exception):
    """A frame that does not follow the protocol."""


def _make_codec():
    # Everything the codec uses is bound here, before any candidate code runs, so a candidate
    # that monkeypatches builtins cannot change how its return value is encoded.
    _type, _len, _hex, _isinstance, _list, _dict = type, len, hex, isinstance, list, dict
    _str, _int, _float, _bool, _bytes, _complex = str, int, float, bool, bytes, complex
    _int_repr, _float_repr, _items = int.__repr__, float.__repr__, dict.items
    _fromhex, _inf, _enumerate = bytes.fromhex, float("inf"), enumerate
    _Unser, _Large, _Proto = Unserializable, TooLarge, ProtocolError
    _TypeError, _ValueError = TypeError, ValueError
    from _json import encode_basestring_ascii as _esc

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

    def decode(obj, depth=0):
        t = _type(obj)
        if t is _str or t is _int or t is _float or t is _bool or obj is None:
            return obj
        if depth >= MAX_DEPTH:
            raise _Proto("value nested too deeply")
        if t is _list:
            return [decode(x, depth + 1) for x in obj]
        if t is not _dict or _len(obj) != 2 or TAG not in obj or "v" not in obj:
            raise _Proto("malformed value")
        tag, v = obj[TAG], obj["v"]
        try:
            if tag in builders and _type(v) is _list:
                return builders[tag]([decode(x, depth + 1) for x in v])
            if tag == "dict" and _type(v) is _list:
                pairs = [(decode(p[0], depth + 1), decode(p[1], depth + 1)) for p in v
                         if _type(p) is _list and _len(p) == 2]
                if _len(pairs) == _len(v):
                    return _dict(pairs)
            elif tag == "complex" and _type(v) is _list and _len(v) == 2:
                parts = [decode(x, depth + 1) for x in v]
                if _type(parts[0]) is _float and _type(parts[1]) is _float:
                    return _complex(*parts)
            elif tag == "bytes" and _type(v) is _str:
                return _fromhex(v)
            elif tag == "float" and v in floats:
                return floats[v]
            elif tag == "int" and _type(v) is _str and _len(v) < (1 << 22):
                return _int(v, 16)
        except (_TypeError, _ValueError) as exc:  # unhashable key, bad hex...
            raise _Proto(f"malformed {tag}: {exc}") from None
        raise _Proto(f"malformed value tagged {tag!r}")

    return encode, decode


encode_value, decode_value = _make_codec()


def write_frame(fd, text):
    data = text.encode("ascii")  # the encoder escapes everything outside ASCII
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data):]


def read_frame(fd):
    """One frame from the (trusted) harness, or None at EOF."""
    buf, want = b"", 4
    while len(buf) < want:
        chunk = os.read(fd, min(want - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
        if want == 4 and len(buf) == 4:
            want += int.from_bytes(buf, "big")
    return buf[4:].decode("ascii")


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
