"""The code both sandboxed sides of isolated verification run (see ``verify.py``): this file's
text is appended to the answer's program and put before the tests' program, so it imports
only the standard library and runs nothing when loaded.

The answer worker serves ``_wc_answer(op, operands, kwargs)``: it applies ``op`` (a call, an
attribute, an operator; :data:`_WC_OPS`) to objects of the answer and replies with plain data
only: exact builtin values as they are, and any other object as a reference marker
(``_WC_REF``, its number, its class's number, its class's name, whether it is a class, the
builtin type it derives from or "") that the tests' side turns into a stand-in forwarding
every use back here. A stand-in of a value of a subclass of a builtin type (a namedtuple, a
Counter, an IntEnum) compares with plain values as that builtin value (``op "plain"``,
fetched at each comparison, compared on the tests' side).

Each worker gets the common head of this file and its own side (``verify_relay`` splits
the text at the two section lines).

The tests' worker serves ``_wc_tests(kind, payload)``: "start" binds the answer's top-level
names (stand-ins for its functions and classes, local exception classes for its exception
classes, its plain constants) in a fresh namespace and runs the tests in a thread of their
own; every use of a stand-in becomes a ``["call", op, operands, kwargs]`` reply, and the next
``_wc_tests("reply", ...)`` hands the answer's reply back to the waiting test. The last reply
is ``["done", True]`` or ``["done", False, type name, message]``.

What the answer can do to the tests: reply with plain values and stand-ins. No operator of
the answer's code ever receives a plain value of the tests (an expected value, in a test),
so none can answer "equal" or "close" to whatever it is given: a stand-in is never equal to
a plain value (``==`` gives False), and ``<``, ``-``, ``*``... between a stand-in and a plain
value raise TypeError; ``x in stand_in`` iterates the stand-in and compares here. Plain
values reach the answer only as the arguments of calls (the inputs). Between two of the
answer's objects, operators are the answer's own (``Point(1, 2) + Point(3, 4) ==
Point(4, 6)``): a test that builds its expected value with the answer's class trusts it.
"""

import builtins as _wc_builtins
import operator as _wc_operator

_WC_REF = "\x00wizardcoder-ref"
_WC_DEPTH = 90  # below the codec's 100 levels
_WC_PLAIN = (int, float, complex, str, bytes, bool, type(None))
_WC_BASES = (bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)
_WC_MUTABLE = (list, dict, set)


# ------------------------------------------------------------------ the answer's side

_WC_OPS = {
    "call": lambda f, *a, **k: f(*a, **k), "plain": lambda obj: _wc_plain(obj),
    "getattr": getattr, "setattr": setattr, "delattr": delattr, "len": len, "bool": bool,
    "str": str, "repr": repr, "hash": hash,
    "iter": iter, "next": next, "int": int, "float": float, "index": _wc_operator.index,
    "getitem": _wc_operator.getitem, "setitem": _wc_operator.setitem,
    "delitem": _wc_operator.delitem, "contains": _wc_operator.contains,
    **{name: getattr(_wc_operator, name) for name in (
        "eq", "ne", "lt", "le", "gt", "ge", "add", "sub", "mul", "truediv", "floordiv", "mod",
        "pow", "matmul", "and_", "or_", "xor", "lshift", "rshift", "neg", "pos", "abs",
        "invert")},
}

_wc_objects = []  # reference number -> object (kept alive: numbers stay valid)
_wc_numbers = {}  # id(object) -> reference number


def _wc_number(obj):
    number = _wc_numbers.get(id(obj))
    if number is None:
        number = _wc_numbers[id(obj)] = len(_wc_objects)
        _wc_objects.append(obj)
    return number


def _wc_base(obj):
    """The builtin type ``obj``'s class derives from (a namedtuple: tuple), else None."""
    if not isinstance(obj, type):
        for base in _WC_BASES:
            if isinstance(obj, base):
                return base
    return None


def _wc_plain(obj):
    base = _wc_base(obj)
    if base is None:
        raise TypeError(f"{type(obj).__name__} has no builtin value")
    plain = base(obj)
    if type(plain) is not base:
        raise TypeError(f"{type(obj).__name__} has no builtin value")
    return plain


def _wc_marker(obj):
    cls, is_class = type(obj), isinstance(obj, type)
    name = (obj if is_class else cls).__name__
    base = _wc_base(obj)
    return (_WC_REF, _wc_number(obj), _wc_number(cls), str(name)[:100], is_class,
            "" if base is None else base.__name__)


def _wc_out(value, depth=0):
    """``value`` as plain data (see the module docstring)."""
    t = type(value)
    if t in _WC_PLAIN:
        return value
    if depth > _WC_DEPTH:
        raise ValueError("a value nested too deeply to send")
    if t is list or t is tuple or t is set or t is frozenset:
        return t(_wc_out(v, depth + 1) for v in value)
    if t is dict:
        return {_wc_out(k, depth + 1): _wc_out(v, depth + 1) for k, v in value.items()}
    return _wc_marker(value)


def _wc_in(value, depth=0):
    """A value from the tests' side with its reference markers replaced by the objects."""
    t = type(value)
    if t in _WC_PLAIN or depth > _WC_DEPTH:
        return value
    if t is tuple and len(value) == 6 and value[0] == _WC_REF:
        return _wc_objects[value[1]]
    if t is list or t is tuple or t is set or t is frozenset:
        return t(_wc_in(v, depth + 1) for v in value)
    if t is dict:
        return {_wc_in(k, depth + 1): _wc_in(v, depth + 1) for k, v in value.items()}
    return value


def _wc_builtin_base(cls):
    for base in cls.__mro__:
        if getattr(_wc_builtins, base.__name__, None) is base:
            return base.__name__
    return "Exception"


def _wc_names():
    """The answer's top-level names: [name, kind, data] with kind function, class,
    exception (data: [class number, builtin base name]) or value."""
    names = []
    for name, value in list(globals().items()):
        if name.startswith(("_wc_", "_WC_", "__")) or type(value) is type(_wc_builtins):
            continue
        if isinstance(value, type) and issubclass(value, BaseException):
            names.append([name, "exception", [_wc_number(value), _wc_builtin_base(value)]])
        elif isinstance(value, type):
            names.append([name, "class", _wc_marker(value)])
        elif callable(value):
            names.append([name, "function", _wc_marker(value)])
        else:
            names.append([name, "value", _wc_out(value)])
    return names


def _wc_answer(op, operands=(), kwargs=None):
    """The answer worker's entry point: ``["ok", value]`` (``["ok", value, changed]`` after a
    call that changed list, dict or set arguments in place: [[position, new value]]),
    ``["stop"]`` (``next`` of an exhausted iterator) or ``["exc", type name, message,
    builtin base, class number]``."""
    try:
        if op == "names":
            return ["ok", _wc_names()]
        operands = _wc_in(operands)
        before = [_wc_out(a) if op == "call" and type(a) in _WC_MUTABLE else None
                  for a in operands]
        result = _wc_out(_WC_OPS[op](*operands, **_wc_in(kwargs or {})))
        changed = [[i, now] for i, (a, b) in enumerate(zip(operands, before, strict=True))
                   if b is not None and (now := _wc_out(a)) != b]
        return ["ok", result, changed] if changed else ["ok", result]
    except StopIteration:
        if op == "next":
            return ["stop"]
        return ["exc", "StopIteration", "raised outside of next()", "RuntimeError", -1]
    except BaseException as exc:  # the tests see it raised
        try:
            cls = type(exc)
            return ["exc", str(cls.__name__)[:100], str(exc)[:2000], _wc_builtin_base(cls),
                    _wc_numbers.get(id(cls), -1)]
        except BaseException:
            return ["exc", "Exception", "<unprintable exception>", "Exception", -1]


# ------------------------------------------------------------------- the tests' side

class _WcRemoteClass(type):
    """The class of a stand-in for one of the answer's classes: calling it, and reading its
    attributes, go to the answer."""

    def __call__(cls, *args, **kwargs):
        return _wc_op("call", cls, *args, **kwargs)

    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _wc_op("getattr", cls, name)


def _wc_forward(op):
    def method(self, *args):
        return _wc_op(op, self, *args)
    return method


def _wc_binary(op, reflected=False):
    def method(self, other):  # never with a plain value (see the module docstring)
        if not isinstance(other, _WcRemote | _WcRemoteClass):
            if not getattr(type(self), "_wc_base", ""):
                return NotImplemented
            plain = _wc_op("plain", self)  # its builtin value, compared here
            return getattr(_wc_operator, op)(*((other, plain) if reflected else (plain, other)))
        return _wc_op(op, *((other, self) if reflected else (self, other)))
    return method


def _wc_typed(op, kind):
    def method(self, *args):
        value = _wc_op(op, self, *args)
        if type(value) is not kind:
            raise TypeError(f"{op}() of the answer's object returned {type(value).__name__}")
        return value
    return method


class _WcRemote:
    """A stand-in for one of the answer's objects: each use is forwarded to the answer."""

    __slots__ = ("_wc_ref",)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _wc_op("getattr", self, name)

    def __setattr__(self, name, value):
        _wc_op("setattr", self, name, value)

    def __delattr__(self, name):
        _wc_op("delattr", self, name)

    def __call__(self, *args, **kwargs):
        return _wc_op("call", self, *args, **kwargs)

    def __iter__(self):
        return _wc_op("iter", self)

    def __next__(self):
        return _wc_op("next", self)

    __bool__ = _wc_typed("bool", bool)
    __len__ = _wc_typed("len", int)
    __hash__ = _wc_typed("hash", int)
    __str__ = _wc_typed("str", str)
    __repr__ = _wc_typed("repr", str)
    __int__ = _wc_typed("int", int)
    __index__ = _wc_typed("index", int)
    __float__ = _wc_typed("float", float)
    __getitem__, __setitem__ = _wc_forward("getitem"), _wc_forward("setitem")
    __delitem__ = _wc_forward("delitem")
    __eq__, __ne__ = _wc_binary("eq"), _wc_binary("ne")
    __lt__, __le__ = _wc_binary("lt"), _wc_binary("le")
    __gt__, __ge__ = _wc_binary("gt"), _wc_binary("ge")

    def __contains__(self, value):  # compared here, item by item
        return any(item is value or item == value for item in self)


def _wc_arithmetic():  # the answer's own arithmetic between its objects (Vector + Vector)
    for name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and",
                 "or", "xor", "lshift", "rshift"):
        op = name + ("_" if name in ("and", "or") else "")
        setattr(_WcRemote, f"__{name}__", _wc_binary(op))
        setattr(_WcRemote, f"__r{name}__", _wc_binary(op, reflected=True))
    for name in ("neg", "pos", "abs", "invert"):
        setattr(_WcRemote, f"__{name}__", _wc_forward(name))


_wc_arithmetic()


_wc_classes = {}      # class number -> stand-in class
_wc_raised = {}       # class number -> local class of one of the answer's exceptions
_wc_class_refs = {}   # local exception class -> class number
_wc_exceptions = {}   # (name, builtin base) -> local exception class
_WC_NOT_REBUILT = ("StopIteration", "StopAsyncIteration")  # control flow in the tests


def _wc_class(number, name, base=""):
    cls = _wc_classes.get(number)
    if cls is None:
        cls = _wc_classes[number] = _WcRemoteClass(name, (_WcRemote,), {
            "__slots__": (), "_wc_class_ref": number, "_wc_base": "",
            "__module__": "answer"})
    if base and not cls._wc_base:  # first seen as a class (a top-level name), not a value
        cls._wc_base = str(base)
    return cls


def _wc_recv(value, depth=0):
    t = type(value)
    if t in _WC_PLAIN or depth > _WC_DEPTH:
        return value
    if t is tuple and len(value) == 6 and value[0] == _WC_REF:
        _, number, class_number, name, is_class, base = value
        if is_class:
            return _wc_raised.get(number) or _wc_class(number, name)
        obj = object.__new__(_wc_class(class_number, name, base))
        object.__setattr__(obj, "_wc_ref", number)
        return obj
    if t is list or t is tuple or t is set or t is frozenset:
        return t(_wc_recv(v, depth + 1) for v in value)
    if t is dict:
        return {_wc_recv(k, depth + 1): _wc_recv(v, depth + 1) for k, v in value.items()}
    return value


def _wc_send(value, depth=0):
    t = type(value)
    if t in _WC_PLAIN:
        return value
    if depth > _WC_DEPTH:
        raise ValueError("a value nested too deeply to send to the answer")
    if isinstance(value, _WcRemote):
        cls = type(value)
        return (_WC_REF, value._wc_ref, cls._wc_class_ref, cls.__name__, False, "")
    if isinstance(value, _WcRemoteClass):
        return (_WC_REF, value._wc_class_ref, -1, value.__name__, True, "")
    if isinstance(value, type) and value in _wc_class_refs:  # one of its exception classes
        return (_WC_REF, _wc_class_refs[value], -1, value.__name__, True, "")
    if t is list or t is tuple or t is set or t is frozenset:
        return t(_wc_send(v, depth + 1) for v in value)
    if t is dict:
        return {_wc_send(k, depth + 1): _wc_send(v, depth + 1) for k, v in value.items()}
    for base in _WC_BASES:
        if isinstance(value, base) and not isinstance(value, type):
            return _wc_send(base(value), depth + 1)
    raise TypeError("isolated verification passes only plain values and the answer's own "
                    f"objects to the answer, not {t.__name__}")


def _wc_exception_class(name, base):
    """The builtin exception ``name``, else a local class of that name deriving from the
    builtin ``base`` (StopIteration is never rebuilt: it would end a loop of the tests)."""
    builtin = getattr(_wc_builtins, base, None)
    if not (isinstance(builtin, type) and issubclass(builtin, BaseException)) or \
            base in _WC_NOT_REBUILT:
        builtin = RuntimeError
    if name == base and builtin.__name__ == name:
        return builtin
    cls = _wc_exceptions.get((name, base))
    if cls is None:
        cls = _wc_exceptions[name, base] = type(name, (builtin,), {"__module__": "answer"})
    return cls


def _wc_exception(name, message, base, class_number):
    cls = _wc_raised.get(class_number) or _wc_exception_class(name, base)
    try:
        return cls(message)
    except Exception:  # a builtin that needs more arguments (UnicodeDecodeError...)
        return _wc_exception_class(name, "Exception")(message)


def _wc_start_channel():
    import queue
    import threading

    return queue.SimpleQueue(), queue.SimpleQueue(), threading.Lock()


_wc_to_host = _wc_from_host = _wc_lock = None


def _wc_op(op, *operands, **kwargs):
    """Apply ``op`` in the answer's worker (through the trusted side); its reply here."""
    request = ["call", op, _wc_send(list(operands)), _wc_send(kwargs)]
    with _wc_lock:
        _wc_to_host.put(request)
        reply = _wc_from_host.get()
    if reply[0] == "ok" and len(reply) in (2, 3):
        if len(reply) == 3:
            _wc_write_back(operands, reply[2])
        return _wc_recv(reply[1])
    if reply[0] == "stop" and op == "next":
        raise StopIteration
    if reply[0] == "exc" and len(reply) == 5:
        raise _wc_exception(*reply[1:])
    raise RuntimeError("isolated verification: malformed reply from the answer")


def _wc_write_back(operands, changed):
    """What a call changed in its list, dict or set arguments, changed here too (in-place
    algorithms: ``sort_in_place(a); assert a == [1, 2, 3]``)."""
    for position, value in changed:
        if type(position) is not int or not 0 <= position < len(operands):
            continue
        target, new = operands[position], _wc_recv(value)
        if type(target) is not type(new) or type(target) not in _WC_MUTABLE:
            continue
        if type(target) is list:
            target[:] = new
        else:
            target.clear()
            target.update(new)


def _wc_builtin_first(builtin, answer):
    """For an answer's function named like a builtin (MBPP's ``sum(a, b)``): the builtin,
    and the answer's function only where the builtin refuses the arguments (TypeError).
    Never the answer's first: its ``abs`` returning 0 would pass ``abs(x - expected) <
    1e-9``; where the builtin refuses, no expected value went into the arguments."""
    def call(*args, **kwargs):
        try:
            return builtin(*args, **kwargs)
        except TypeError:
            return answer(*args, **kwargs)
    call.__name__ = getattr(builtin, "__name__", "builtin")
    return call


def _wc_bind(names):
    """The tests' namespace: the answer's names, never a dunder (``__builtins__``) nor a name
    of this driver, and never one that replaces a builtin (see :func:`_wc_builtin_first`)."""
    namespace = {"__name__": "__main__", "__builtins__": _wc_builtins}
    for name, kind, data in names:
        if type(name) is not str or not name.isidentifier() or name.startswith("__") or \
                name.startswith(("_wc_", "_WC_")):
            continue
        builtin = getattr(_wc_builtins, name, None)
        if builtin is not None:
            if kind == "function" and callable(builtin) and not isinstance(builtin, type):
                namespace[name] = _wc_builtin_first(builtin, _wc_recv(data))
        elif kind == "exception":  # a local class: raised, caught and checked by the tests
            number, base = data
            cls = _wc_exception_class(name, base)
            _wc_raised[number], _wc_class_refs[cls] = cls, number
            namespace[name] = cls
        else:
            namespace[name] = _wc_recv(data)
    return namespace


def _wc_run(names, source):
    try:  # binding may call the answer too (a set of its objects hashes them): here, not in
        namespace = _wc_bind(names)  # the thread that hands requests to the trusted side
        exec(compile(source, "<tests>", "exec"), namespace)
        _wc_to_host.put(["done", True])
    except BaseException as exc:
        try:
            _wc_to_host.put(["done", False, str(type(exc).__name__)[:100], str(exc)[:2000]])
        except BaseException:
            _wc_to_host.put(["done", False, "Exception", "<unprintable exception>"])


def _wc_tests(kind, payload):
    """The tests' worker's entry point (see the module docstring)."""
    global _wc_to_host, _wc_from_host, _wc_lock
    import threading

    if kind == "start":
        _wc_to_host, _wc_from_host, _wc_lock = _wc_start_channel()
        names, source = payload
        threading.Thread(target=_wc_run, args=(names, source), daemon=True).start()
    else:
        _wc_from_host.put(payload)
    return _wc_to_host.get()
