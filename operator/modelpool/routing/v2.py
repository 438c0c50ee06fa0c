"""KServe v2 inference bodies: parse, validate, read texts and confidences, annotate.

A body is a JSON header, optionally followed by binary tensor data (the binary tensor
extension: the HTTP header ``Inference-Header-Content-Length`` gives the JSON part's size).
Everything here is pure: bytes in, values or :class:`BadRequest` out.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

TEXT_INPUT = "TEXT"
PROBABILITIES_OUTPUT = "PROBABILITIES"

_ELEMENT_SIZE = {
    "BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
    "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8, "BF16": 2,
}  # fmt: skip
DATATYPES = frozenset([*_ELEMENT_SIZE, "BYTES"])
_NUMPY = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}
# Triton reads an integer datatype's JSON values as int64 (INT*) or uint64 (UINT*) and casts them
# to the narrower type itself; a value outside those answers 500, so the router refuses it first
_INT64_RANGE = (-(2**63), 2**63 - 1)
_UINT64_RANGE = (0, 2**64 - 1)


def _json_int_range(datatype: str) -> tuple[int, int] | None:
    if datatype.startswith("UINT"):
        return _UINT64_RANGE
    return _INT64_RANGE if datatype.startswith("INT") else None


class BadRequest(ValueError):
    """A request the router refuses with a 4xx; the message names the field and the fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class InferBody:
    """A parsed inference request or response body."""

    header: dict[str, Any]
    binary: bytes  # the bytes after the JSON header (empty without binary data)
    binary_header: bool  # did the body come with Inference-Header-Content-Length

    def encode(self) -> tuple[bytes, int | None]:
        """Body bytes and the header length to send (None when the body is plain JSON)."""
        head = json.dumps(self.header, separators=(",", ":")).encode()
        if self.binary_header:
            return head + self.binary, len(head)
        return head, None


def split_body(body: bytes, header_length: int | None) -> tuple[bytes, bytes]:
    """JSON part and binary part of a body."""
    if header_length is None:
        return body, b""
    if header_length < 0 or header_length > len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length: {header_length} is outside the body's {len(body)} bytes"
        )
    return body[:header_length], body[header_length:]


_GZIP_BITS = 16 + zlib.MAX_WBITS
_ZLIB_BITS = zlib.MAX_WBITS
_RAW_DEFLATE_BITS = -zlib.MAX_WBITS


def decode_content(body: bytes, encoding: bytes, limit: int) -> bytes:
    """The body of a request sent with ``Content-Encoding`` (tritonclient's
    ``request_compression_algorithm``: gzip or deflate, as Triton accepts), decompressed to at most
    ``limit`` bytes (413 beyond, so a small bomb cannot fill the memory); 415 for other encodings."""
    name = encoding.strip().lower()
    if name in (b"", b"identity"):
        return body
    if name in (b"gzip", b"x-gzip"):
        formats = [_GZIP_BITS]
    elif name == b"deflate":
        formats = [_ZLIB_BITS, _RAW_DEFLATE_BITS]  # HTTP's deflate is zlib-wrapped; some send it raw
    else:
        shown = name.decode("utf-8", "replace")
        raise BadRequest(f"Content-Encoding: {shown!r} is not supported; use gzip, deflate or identity", 415)
    for bits in formats:
        inflater = zlib.decompressobj(bits)
        try:
            plain = inflater.decompress(body, limit + 1)
            break
        except zlib.error as err:
            error = err
    else:
        raise BadRequest(f"Content-Encoding {name.decode()}: the body does not decompress ({error})")
    if len(plain) > limit:
        raise BadRequest(f"request body decompresses to over the limit of {limit} bytes", 413)
    if not inflater.eof:
        raise BadRequest(f"Content-Encoding {name.decode()}: the compressed body is truncated")
    return plain


def parse_header_length(value: bytes | None) -> int | None:
    """Value of ``Inference-Header-Content-Length`` (None when absent)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"Inference-Header-Content-Length: {value!r} is not an integer") from None


def _load_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(f"malformed JSON in {what}: {err}") from None
    except RecursionError:
        raise BadRequest(f"malformed JSON in {what}: {_TOO_DEEP}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _allowed_types(datatype: str) -> frozenset[type]:
    if datatype == "BYTES":
        return frozenset({str})
    if datatype == "BOOL":
        return frozenset({bool})
    if datatype.startswith(("INT", "UINT")):
        return frozenset({int})
    return frozenset({int, float})


def _count_elements(data: Any, datatype: str, where: str) -> int:
    """Number of scalars in (possibly nested) ``data``; checks each scalar's JSON type.

    Flat lists, the common case, are checked with one ``set(map(type, ...))`` (C speed).
    """
    allowed = _allowed_types(datatype)
    if not isinstance(data, list):
        data = [data]  # a scalar inside a nested array
    kinds = set(map(type, data))
    if kinds <= allowed:
        bounds = _json_int_range(datatype)
        if bounds is not None and data and not (bounds[0] <= min(data) and max(data) <= bounds[1]):
            bad = next(x for x in data if not bounds[0] <= x <= bounds[1])
            raise BadRequest(
                f"{where}.data: element {bad} is outside [{bounds[0]}, {bounds[1]}], "
                f"what JSON can carry for {datatype}"
            )
        return len(data)
    if list in kinds:
        return sum(_count_elements(item, datatype, where) for item in data)
    bad = next(x for x in data if type(x) not in allowed)
    raise BadRequest(f"{where}.data: element {bad!r} does not match datatype {datatype}")


def _check_tensor(tensor: Any, where: str) -> int:
    """Validate one input tensor; return its binary data size (0 when inline)."""
    if not isinstance(tensor, dict):
        raise BadRequest(f"{where}: must be an object with name, datatype, shape and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name: missing or not a string")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise BadRequest(
            f"{where}.datatype: {datatype!r} is not a v2 datatype ({', '.join(sorted(DATATYPES))})"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"{where}.shape: must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise BadRequest(f"{where}.shape: dimensions must be >= 0, got {shape}")
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}.parameters: must be an object")
    size = params.get("binary_data_size")
    expected = math.prod(shape)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"{where}.parameters.binary_data_size: must be a non-negative integer")
        if "data" in tensor:
            raise BadRequest(f"{where}: give either data or parameters.binary_data_size, not both")
        if datatype != "BYTES" and size != expected * _ELEMENT_SIZE[datatype]:
            raise BadRequest(
                f"{where}.parameters.binary_data_size: {size} bytes, but shape {shape} of {datatype} "
                f"needs {expected * _ELEMENT_SIZE[datatype]}"
            )
        return int(size)
    if "data" not in tensor:
        raise BadRequest(f"{where}.data: missing (or give parameters.binary_data_size with binary data)")
    data = tensor["data"]
    if not isinstance(data, list):
        # the v2 protocol's tensor data is a JSON array (flat or nested, row-major); Triton answers
        # a bare value with 500 ("attempt to access JSON non-array as array"), so say it here
        raise BadRequest(f"{where}.data: must be a JSON array of the {expected} elements, got {data!r}")
    count = _count_elements(data, datatype, where)
    if count != expected:
        raise BadRequest(f"{where}.data: shape {shape} needs {expected} elements, data has {count}")
    return 0


def _is_uint64(value: Any) -> bool:
    return type(value) is int and _UINT64_RANGE[0] <= value <= _UINT64_RANGE[1]


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_str(value: Any) -> bool:
    return type(value) is str


_BOOL = (_is_bool, "true or false")
_UINT = (_is_uint64, "an integer from 0 to 2^64 - 1")
# the parameters whose type Triton checks, answering a wrong one with 500 instead of 400
_REQUEST_PARAMETERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "sequence_id": (lambda v: _is_str(v) or _is_uint64(v), "a string or an integer from 0 to 2^64 - 1"),
    "sequence_start": _BOOL,
    "sequence_end": _BOOL,
    "binary_data_output": _BOOL,
    "priority": _UINT,
    "timeout": _UINT,
}
_OUTPUT_PARAMETERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "binary_data": _BOOL,
    "classification": _UINT,
    "shared_memory_region": (_is_str, "a string"),
    "shared_memory_byte_size": _UINT,
    "shared_memory_offset": _UINT,
}


def _check_parameters(params: Any, rules: dict[str, tuple[Callable[[Any], bool], str]], where: str) -> None:
    if not isinstance(params, dict):
        return
    for key, (valid, what) in rules.items():
        if key in params and not valid(params[key]):
            raise BadRequest(f"{where}.{key}: must be {what}, got {params[key]!r}")


_TOO_DEEP = "arrays or objects nested too deeply"


def parse_request(body: bytes, header_length: int | None) -> InferBody:
    """Parse and validate an inference request body (structure only; the model checks names)."""
    try:
        return _parse_request(body, header_length)
    except RecursionError:  # nesting json.loads takes but the recursive checks cannot walk
        raise BadRequest(f"the inference request: {_TOO_DEEP}") from None


def _parse_request(body: bytes, header_length: int | None) -> InferBody:
    head, binary = split_body(body, header_length)
    header = _load_json(head, "the inference request")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs: must be a non-empty list of tensors")
    binary_total = sum(_check_tensor(t, f"inputs[{i}]") for i, t in enumerate(inputs))
    if binary_total != len(binary):
        raise BadRequest(
            f"binary data: inputs declare {binary_total} bytes (parameters.binary_data_size), "
            f"the body has {len(binary)}"
        )
    outputs = header.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list)
        or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise BadRequest("outputs: must be a list of objects with a name")
    for i, output in enumerate(outputs or ()):
        _check_parameters(output.get("parameters"), _OUTPUT_PARAMETERS, f"outputs[{i}].parameters")
    if "parameters" in header and not isinstance(header["parameters"], dict):
        raise BadRequest("parameters: must be an object")
    _check_parameters(header.get("parameters"), _REQUEST_PARAMETERS, "parameters")
    if "id" in header and not isinstance(header["id"], str):
        raise BadRequest(f"id: must be a string, got {header['id']!r}")
    return InferBody(header, binary, header_length is not None)


_SEQUENCE_ID = b'"sequence_id"'


def sequence_key(header: dict[str, Any]) -> bytes | None:
    """The request's ``parameters.sequence_id`` as bytes (``i<n>`` for an integer, ``s<text>`` for
    a string: Triton keeps the two kinds apart), or None when it is no sequence request (absent,
    0, empty, or of a type Triton refuses)."""
    params = header.get("parameters")
    if not isinstance(params, dict):
        return None
    seq = params.get("sequence_id")
    if type(seq) is int:  # not a bool
        return b"i%d" % seq if seq else None
    if type(seq) is str and seq:
        return b"s" + seq.encode("utf-8", "surrogatepass")
    return None


def find_sequence(body: bytes, header_length: int | None) -> bytes | None:
    """:func:`sequence_key` of a body the router does not parse otherwise: a substring search of
    its JSON part first (C speed; most requests stop here), and only when ``"sequence_id"`` is in it
    the JSON part is decoded.  None for anything that does not decode (Triton answers it)."""
    end = len(body) if header_length is None or not 0 <= header_length <= len(body) else header_length
    if body.find(_SEQUENCE_ID, 0, end) < 0:
        return None
    try:
        header = json.loads(body[:end] if end < len(body) else body)
    except (ValueError, RecursionError):
        return None
    return sequence_key(header) if isinstance(header, dict) else None


def _binary_offsets(tensors: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Where each binary tensor lies in the binary part: name -> (offset, size)."""
    offsets: dict[str, tuple[int, int]] = {}
    pos = 0
    for t in tensors:
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            offsets[str(t.get("name"))] = (pos, int(size))
            pos += int(size)
    return offsets


def _decode_bytes_items(raw: bytes, where: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest(f"{where}: truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise BadRequest(f"{where}: BYTES element of {n} bytes runs past the data")
        out.append(raw[pos : pos + n].decode("utf-8", "replace"))
        pos += n
    return out


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def request_texts(body: InferBody) -> list[str]:
    """The strings of input ``TEXT`` (BYTES), JSON or binary; BadRequest when there is none."""
    try:
        return _request_texts(body)
    except RecursionError:
        raise BadRequest(f"inputs: {_TOO_DEEP}") from None


def _request_texts(body: InferBody) -> list[str]:
    inputs: list[dict[str, Any]] = body.header["inputs"]
    for i, tensor in enumerate(inputs):
        if tensor.get("name") != TEXT_INPUT:
            continue
        if tensor.get("datatype") != "BYTES":
            raise BadRequest(f"inputs[{i}].datatype: input TEXT must be BYTES, got {tensor.get('datatype')}")
        if "data" in tensor:
            return [str(x) for x in _flatten(tensor["data"])]
        offset, size = _binary_offsets(inputs)[TEXT_INPUT]
        return _decode_bytes_items(body.binary[offset : offset + size], f"inputs[{i}]")
    names = [t.get("name") for t in inputs]
    raise BadRequest(f"inputs: this pool routes by input {TEXT_INPUT!r} (BYTES), the request has {names}")


def parse_response(body: bytes, header_length: int | None) -> InferBody:
    """Parse an upstream inference response (raises BadRequest if it is not one)."""
    head, binary = split_body(body, header_length)
    header = _load_json(head, "the upstream response")
    if not isinstance(header.get("outputs"), list):
        raise BadRequest("upstream response has no outputs list")
    return InferBody(header, binary, header_length is not None)


def _classification_scores(items: list[str]) -> NDArray[np.float64]:
    """The scores of Triton's classification strings (``"0.950000:3"`` or ``"0.95:3:label"``)."""
    return np.asarray([float(str(item).split(":", 1)[0]) for item in items], dtype=np.float64)


def _probabilities(
    tensor: dict[str, Any], outputs: list[dict[str, Any]], binary: bytes
) -> NDArray[np.float64]:
    """The values of output ``PROBABILITIES``: numbers, or the top-k scores of a classification."""
    if tensor.get("datatype") == "BYTES":  # the client asked for parameters.classification
        if "data" in tensor:
            return _classification_scores(_flatten(tensor["data"]))
        offset, size = _binary_offsets(outputs)[PROBABILITIES_OUTPUT]
        items = _decode_bytes_items(binary[offset : offset + size], PROBABILITIES_OUTPUT)
        return _classification_scores(items)
    if "data" in tensor:
        return np.asarray(_flatten(tensor["data"]), dtype=np.float64)
    offset, size = _binary_offsets(outputs)[PROBABILITIES_OUTPUT]
    dtype = _NUMPY.get(str(tensor.get("datatype")), np.float32)
    return np.frombuffer(binary[offset : offset + size], dtype=dtype).astype(np.float64)


def confidence(body: InferBody) -> float | None:
    """Lowest top-class probability across the batch, from output ``PROBABILITIES``; None if it is
    absent or unreadable (the cascade then escalates).

    A classification output (the client's ``parameters.classification``: BYTES ``"score:index"``
    strings, top-k per row, best first) counts by its scores like the full distribution.
    """
    outputs: list[dict[str, Any]] = body.header["outputs"]
    for tensor in outputs:
        if tensor.get("name") != PROBABILITIES_OUTPUT:
            continue
        shape = tensor.get("shape") or []
        try:
            values = _probabilities(tensor, outputs, body.binary)
            if values.size == 0:
                return None
            width = int(shape[-1]) if shape and int(shape[-1]) > 0 else values.size
            return float(values.reshape(-1, width).max(axis=1).min())
        except (ValueError, TypeError, KeyError, RecursionError):  # BadRequest is a ValueError
            return None
    return None


def ensure_output(body: InferBody, name: str) -> bool:
    """Make sure the request asks for output ``name`` (as JSON data); True if it was added."""
    outputs = body.header.get("outputs")
    if not outputs or any(o.get("name") == name for o in outputs):
        return False  # no outputs list, or an empty one: Triton sends every output back
    outputs.append({"name": name, "parameters": {"binary_data": False}})
    return True


def drop_output(body: InferBody, name: str) -> None:
    """Remove output ``name`` (and its binary data, if any) from a response body."""
    outputs: list[dict[str, Any]] = body.header["outputs"]
    offsets = _binary_offsets(outputs)
    if name in offsets:
        offset, size = offsets[name]
        body.binary = body.binary[:offset] + body.binary[offset + size :]
    body.header["outputs"] = [o for o in outputs if o.get("name") != name]


def annotate(body: InferBody, model_name: str, **parameters: Any) -> None:
    """Name the pool's model in the response and add ``parameters`` (e.g. which variant answered)."""
    body.header["model_name"] = model_name
    params = body.header.get("parameters")
    if not isinstance(params, dict):
        params = {}
        body.header["parameters"] = params
    params.update(parameters)
