"""How a student's answer crosses from the notebook's kernel to the grader, as plain data only.

The grader computes every verdict in its own process, which never runs student code. It runs the same
check function as ``check()`` does in the notebook, with the answer replaced by a proxy: calling the proxy
(or a method of an object it stands for) sends plain-data arguments to the kernel, the kernel runs the
student's code and sends back plain data (JSON, arrays in ``.npz`` without pickle, size-capped), or a
handle when the result is an object the exercise defines. Comparisons on a handle are never sent to the
kernel, so an ``__eq__`` that always says yes decides nothing.

Kernel side: ``serve(folder, n)`` answers request ``n`` (run by the grader as a hidden cell).
Grader side: ``decode`` and ``Remote``; ``labkit.grading`` drives the kernel.

One kind of object crosses the other way: a check's hidden ``tf.keras`` model of Dense layers (lab 08 attacks
one) is sent as its weights and activations and rebuilt in the kernel as a ``tf.keras.Sequential``.
"""

from __future__ import annotations

import base64
import builtins
import json
import math
import os
from pathlib import Path, PurePath
from typing import Any

import numpy as np

TAG = "__labkit__"
MAX_BYTES = 20 * 2**20  # one message, JSON and arrays together
MAX_ITEMS = 200_000  # values in one message
MAX_DEPTH = 40


class BridgeError(Exception):
    """A message that is not valid plain data (too big, too deep, malformed)."""


# --------------------------------------------------------------------------- encoding (both sides)

class _Encoder:
    """Plain data to JSON-able values plus named arrays; anything else becomes a handle (kernel side only)."""

    def __init__(self, handles: dict | None):
        self.handles = handles  # None on the grader's side: there, non-plain data is a bug in the check
        self.arrays: dict[str, np.ndarray] = {}
        self.items = 0
        self.array_bytes = 0

    def encode(self, value: Any, depth: int = 0) -> Any:
        self.items += 1
        if self.items > MAX_ITEMS or depth > MAX_DEPTH:
            raise BridgeError(f"the value is too large to pass (more than {MAX_ITEMS} items or {MAX_DEPTH} levels)")
        kind = type(value)  # type(), not isinstance: a forged __class__ cannot pass for plain data
        if value is None or kind is bool:
            return value
        if value is ...:
            return {TAG: "ellipsis"}
        if isinstance(value, Remote):
            return {TAG: "handle_ref", "id": object.__getattribute__(value, "_id")}
        if issubclass(kind, np.generic) and kind is not np.object_:
            value = value.item()
            kind = type(value)
            if kind is bool or value is None:
                return value
        if issubclass(kind, bool):
            return bool(value)
        if issubclass(kind, int):
            return int.__int__(value)  # the number itself, whatever a subclass overrides
        if issubclass(kind, float):
            number = float.__float__(value)
            return number if math.isfinite(number) else {TAG: "float", "value": repr(number)}
        if issubclass(kind, str):
            return str.__str__(value)
        if issubclass(kind, np.ndarray) and not value.dtype.hasobject:
            array = np.array(value, subok=False)
            self.array_bytes += array.nbytes
            if self.array_bytes > MAX_BYTES:
                raise BridgeError(f"arrays larger than {MAX_BYTES // 2**20} MB cannot be passed")
            key = f"a{len(self.arrays)}"
            self.arrays[key] = array
            return {TAG: "array", "key": key}
        if issubclass(kind, list):
            return [self.encode(v, depth + 1) for v in list.__iter__(value)]
        if issubclass(kind, tuple):
            return {TAG: "tuple", "items": [self.encode(v, depth + 1) for v in tuple.__iter__(value)]}
        if issubclass(kind, dict):
            pairs = list(dict.items(value))
            if all(type(k) is str for k, _ in pairs) and TAG not in value:
                return {k: self.encode(v, depth + 1) for k, v in pairs}
            return {TAG: "dict", "items": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in pairs]}
        if issubclass(kind, (set, frozenset)):
            name = "frozenset" if issubclass(kind, frozenset) else "set"
            items = frozenset.__iter__(value) if name == "frozenset" else set.__iter__(value)
            return {TAG: name, "items": [self.encode(v, depth + 1) for v in items]}
        if issubclass(kind, (bytes, bytearray)):
            return {TAG: "bytes", "base64": base64.b64encode(bytes(value)).decode()}
        if issubclass(kind, PurePath):
            return {TAG: "path", "path": str(PurePath(*value.parts))}
        if self.handles is None and _is_keras_model(value):  # a check's hidden model, sent as its weights
            return self._dense_model(value, depth)
        if self.handles is None:
            raise BridgeError(f"{kind.__name__} is not plain data: pass None, bool, int, float, str, lists, dicts "
                              "or numpy arrays")
        key = len(self.handles) + 1
        self.handles[key] = value
        return {TAG: "handle", "id": key, "type": str(kind.__name__)[:80], "callable": callable(value)}


    def _dense_model(self, model, depth: int) -> dict:
        from labkit.adversarial import dense_layers

        try:
            layers = dense_layers(model)
        except ValueError as e:
            raise BridgeError(f"a Keras model crosses only as Dense layers: {e}") from None
        return {TAG: "dense_model",
                "layers": [[self.encode(k, depth + 1), self.encode(b, depth + 1), a] for k, b, a in layers]}


def _is_keras_model(value: Any) -> bool:
    """A tf.keras model (tested by its module, so this needs no TensorFlow import)."""
    return type(value).__module__.split(".")[0] in ("tf_keras", "keras") and hasattr(value, "layers")


def _write(folder: Path, stem: str, message: dict, handles: dict | None) -> None:
    encoder = _Encoder(handles)
    body = encoder.encode(message)
    text = json.dumps(body)
    if len(text) > MAX_BYTES:
        raise BridgeError(f"the value is larger than {MAX_BYTES // 2**20} MB")
    if encoder.arrays:
        np.savez(folder / f"{stem}.tmp.npz", **encoder.arrays)
        os.replace(folder / f"{stem}.tmp.npz", folder / f"{stem}.npz")
    (folder / f"{stem}.tmp.json").write_text(text)
    os.replace(folder / f"{stem}.tmp.json", folder / f"{stem}.json")  # the JSON last: its presence means complete


def _read(folder: Path, stem: str, bridge: Bridge | None, handles: dict | None = None) -> Any:
    path = folder / f"{stem}.json"
    if not path.is_file() or path.is_symlink():
        raise BridgeError("no reply")
    if path.stat().st_size > MAX_BYTES:
        raise BridgeError(f"the reply is larger than {MAX_BYTES // 2**20} MB")
    arrays: dict[str, np.ndarray] = {}
    npz = folder / f"{stem}.npz"
    if npz.is_file() and not npz.is_symlink():
        if npz.stat().st_size > MAX_BYTES + 2**20:
            raise BridgeError(f"the arrays are larger than {MAX_BYTES // 2**20} MB")
        try:
            with np.load(npz, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        except Exception as e:
            raise BridgeError(f"unreadable arrays ({type(e).__name__})") from None
    try:
        body = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise BridgeError(f"malformed reply ({type(e).__name__})") from None
    return _Decoder(arrays, bridge, handles).decode(body)


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray], bridge: Bridge | None, handles: dict | None = None):
        self.arrays = arrays
        self.bridge = bridge
        self.handles = handles  # kernel side: the objects that handle_ref names
        self.items = 0

    def decode(self, value: Any, depth: int = 0) -> Any:
        self.items += 1
        if self.items > MAX_ITEMS or depth > MAX_DEPTH:
            raise BridgeError("the reply is too large")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(v, depth + 1) for v in value]
        if not isinstance(value, dict):
            raise BridgeError("malformed reply")
        tag = value.get(TAG)
        if tag is None:
            return {str(k): self.decode(v, depth + 1) for k, v in value.items()}
        items = value.get("items")
        if tag in ("tuple", "set", "frozenset", "dict") and not isinstance(items, list):
            raise BridgeError("malformed reply")
        if tag == "ellipsis":
            return ...
        if tag == "float":
            if value.get("value") not in ("nan", "inf", "-inf"):
                raise BridgeError("malformed reply")
            return float(value["value"])
        if tag == "array":
            array = self.arrays.get(value.get("key"))
            if array is None or array.dtype.hasobject:
                raise BridgeError("malformed reply")
            return array
        if tag == "tuple":
            return tuple(self.decode(v, depth + 1) for v in items)
        if tag in ("set", "frozenset"):
            decoded = [self.decode(v, depth + 1) for v in items]
            try:
                return set(decoded) if tag == "set" else frozenset(decoded)
            except TypeError:
                raise BridgeError("malformed reply") from None
        if tag == "dict":
            try:
                return {self._key(k, depth): self.decode(v, depth + 1) for k, v in items}
            except (TypeError, ValueError):
                raise BridgeError("malformed reply") from None
        if tag == "bytes":
            try:
                return base64.b64decode(value.get("base64", ""), validate=True)
            except (TypeError, ValueError):
                raise BridgeError("malformed reply") from None
        if tag == "path" and isinstance(value.get("path"), str):
            return value["path"]
        if tag == "dense_model" and self.bridge is None:  # kernel side: a check's hidden model, rebuilt
            return self._dense_model(value.get("layers"), depth)
        if tag == "handle_ref" and self.handles is not None and value.get("id") in self.handles:
            return self.handles[value["id"]]
        if tag == "handle" and self.bridge is not None and type(value.get("id")) is int:
            cls = RemoteFunction if value.get("callable") is True else Remote
            return cls(self.bridge, value["id"], str(value.get("type", "object"))[:80])
        raise BridgeError("malformed reply")

    def _dense_model(self, layers, depth):
        from labkit.adversarial import ACTIVATIONS, keras_model

        if not isinstance(layers, list) or not layers:
            raise BridgeError("malformed model")
        decoded = []
        for layer in layers:
            if not isinstance(layer, list) or len(layer) != 3 or layer[2] not in ACTIVATIONS:
                raise BridgeError("malformed model")
            kernel, bias = self.decode(layer[0], depth + 1), self.decode(layer[1], depth + 1)
            if not (isinstance(kernel, np.ndarray) and isinstance(bias, np.ndarray) and kernel.ndim == 2
                    and bias.shape == kernel.shape[1:]):
                raise BridgeError("malformed model")
            decoded.append((kernel, bias, layer[2]))
        return keras_model(decoded)

    def _key(self, key, depth):
        key = self.decode(key, depth + 1)
        hash(key)
        return key


# --------------------------------------------------------------------------- kernel side

_HANDLES: dict[int, Any] = {}


def serve(folder: str, n: int, answer=None) -> None:
    """Answer request ``n`` in ``folder`` (runs in the student's kernel; ``answer`` is a zero-argument lambda)."""
    folder = Path(folder)
    try:
        request = _read(folder, f"in-{n}", None, _HANDLES) if answer is None else {"op": "answer"}
        reply = {"value": _perform(request, answer)}
    except BaseException as e:  # the student's code may raise anything, SystemExit included
        try:
            message = str(e)[:500]
        except BaseException:
            message = ""
        reply = {"error": {"type": str(type(e).__name__)[:80], "message": message}}
    try:
        _write(folder, f"out-{n}", reply, _HANDLES)
    except BaseException as e:
        _write(folder, f"out-{n}", {"error": {"type": "BridgeError", "message": str(e)[:500]}}, None)


def _perform(request: dict, answer) -> Any:
    op = request.get("op")
    if op == "answer":
        return answer()
    target = _HANDLES[request["id"]]
    if op == "call":
        return target(*request.get("args", []), **request.get("kwargs", {}))
    if op == "getattr":
        return getattr(target, request["name"])
    if op == "getitem":
        return target[request["key"]]
    if op == "contains":
        return request["key"] in target
    conversions = {"float": float, "int": int, "index": lambda x: x.__index__(), "str": str, "bool": bool,
                   "len": len, "repr": lambda x: repr(x)[:1000], "array": np.asarray,
                   "list": lambda x: list(_bounded(x))}
    return conversions[op](target)


def _bounded(iterable):
    for i, item in enumerate(iterable):
        if i >= MAX_ITEMS:
            raise BridgeError(f"more than {MAX_ITEMS} items")
        yield item


# --------------------------------------------------------------------------- grader side

class Bridge:
    """The grader's end: ``request(message)`` runs one operation in the kernel and returns the decoded reply."""

    folder: Path

    def request(self, message: dict) -> Any:  # implemented by labkit.grading
        raise NotImplementedError


_BUILTIN_ERRORS = {name: obj for name, obj in vars(builtins).items()
                   if isinstance(obj, type) and issubclass(obj, Exception)}


class StudentError(Exception):
    """An exception the student's code raised in the kernel that has no built-in counterpart."""


def raise_from_kernel(error: dict) -> None:
    """Re-raise, in the grader, the exception the student's code raised in the kernel."""
    name = str(error.get("type", "Exception"))[:80]
    message = str(error.get("message", ""))[:500]
    error = None
    if name in _BUILTIN_ERRORS:
        try:
            error = _BUILTIN_ERRORS[name](message)
        except TypeError:  # constructors with required arguments (UnicodeDecodeError, ...)
            error = None
    raise error or type(name, (StudentError,), {})(message)


class Remote:
    """Stands for an object that lives in the student's kernel. Comparisons stay local (identity)."""

    __slots__ = ("_bridge", "_id", "_type")

    def __init__(self, bridge: Bridge, id: int, type_name: str):
        object.__setattr__(self, "_bridge", bridge)
        object.__setattr__(self, "_id", id)
        object.__setattr__(self, "_type", type_name)

    def _ask(self, op: str, **fields) -> Any:
        bridge = object.__getattribute__(self, "_bridge")
        return bridge.request({"op": op, "id": object.__getattribute__(self, "_id"), **fields})

    def _as(self, op: str, kind: type) -> Any:
        value = self._ask(op)
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise TypeError(f"{op}() of the answer did not give a {kind.__name__}")
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __setattr__(self, name, value):
        raise AttributeError("the grader does not change the student's objects")

    def __float__(self):
        return float(self._as("float", float))

    def __int__(self):
        return self._as("int", int)

    def __index__(self):
        return self._as("index", int)

    def __str__(self):
        return self._as("str", str)

    def __repr__(self):
        try:
            return self._as("repr", str)
        except Exception:
            return f"<{object.__getattribute__(self, '_type')} object>"

    def __bool__(self):
        return self._as("bool", bool)

    def __len__(self):
        return self._as("len", int)

    def __iter__(self):
        return iter(self._as("list", list))

    def __getitem__(self, key):
        return self._ask("getitem", key=key)

    def __contains__(self, key):
        value = self._ask("contains", key=key)
        if type(value) is not bool:
            raise TypeError("`in` on the answer did not give a bool")
        return value

    def __array__(self, dtype=None, copy=None):
        value = self._ask("array")
        if not isinstance(value, np.ndarray):
            raise TypeError("the answer does not convert to an array")
        return value if dtype is None else value.astype(dtype)

    __hash__ = object.__hash__

    def __eq__(self, other):  # identity, never the student's __eq__
        return self is other

    def __ne__(self, other):
        return self is not other


class RemoteFunction(Remote):
    """A callable object in the kernel: calling it runs the student's code there on the given plain data."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        return self._ask("call", args=list(args), kwargs=dict(kwargs))
