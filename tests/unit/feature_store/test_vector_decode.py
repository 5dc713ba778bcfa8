"""The packed-float fast path of the feature read gives exactly what parsing every protobuf gives."""

from __future__ import annotations

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import DoubleList, FloatList, Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_store.online_read import float_list_header, value_to_vector, vectors_to_matrix


def floats(values) -> bytes:
    return ValueProto(float_list_val=FloatList(val=list(values))).SerializeToString()


def slow(raws):
    """The reference: every row parsed with value_to_vector, the first decodable row's width wins."""
    rows = [value_to_vector(r) for r in raws]
    width = next((row.shape[0] for row in rows if row is not None), 0)
    out = np.zeros((len(rows), width), dtype=np.float32)
    known = np.zeros(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        if row is not None and row.shape[0] == width:
            out[i], known[i] = row, True
    return out, known


CASES = {
    "all packed floats": lambda rng: [floats(rng.random(300).astype(np.float32)) for _ in range(50)],
    "unknown items": lambda rng: [None, floats(rng.random(7)), None, floats(rng.random(7))],
    "mixed widths": lambda rng: [floats(rng.random(7)), floats(rng.random(6)), floats(rng.random(7))],
    "doubles and ints": lambda rng: [ValueProto(double_list_val=DoubleList(val=[0.1, 2.5])).SerializeToString(),
                                     floats([1.0, -3.0]),
                                     ValueProto(int64_list_val=Int64List(val=[4, 5])).SerializeToString()],
    "strings are not vectors": lambda rng: [ValueProto(string_list_val=StringList(val=["a"])).SerializeToString(),
                                            floats([1.5, 2.5, 3.5])],
    "extreme floats": lambda rng: [floats([np.float32(3.4e38), -0.0, np.float32(1e-45), np.inf, -np.inf])],
    "nothing known": lambda rng: [None, None],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_fast_path_equals_parsing_every_row(case):
    raws = CASES[case](np.random.default_rng(0))
    out, known = vectors_to_matrix(raws)
    want, want_known = slow(raws)
    assert out.dtype == np.float32 and out.shape == want.shape
    assert np.array_equal(known, want_known)
    assert np.array_equal(out, want, equal_nan=True)


def test_a_row_whose_bytes_only_look_like_the_header_is_parsed_not_copied():
    header = float_list_header(3)
    good = floats([1.0, 2.0, 3.0])
    assert good.startswith(header) and len(good) == len(header) + 12
    truncated = good[:-4]  # not a valid length for the fast path: parsed (and refused) by protobuf
    with pytest.raises(Exception):
        value_to_vector(truncated)
    out, known = vectors_to_matrix([good, good[:len(header)] + b"\x00" * 12])
    assert known.tolist() == [True, True] and out[1].tolist() == [0.0, 0.0, 0.0]
