"""4-bit blockwise quantization (NF4, FP4) and its double quantization: the code tables against the
published values and their construction, the nibble order, the error bound per block, zero
blocks and padding, a plain-NumPy reference written here, bitsandbytes' own codes (when it
can quantize on the CPU here), and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import randn
from lamina.errors import ShapeError
from lamina.nn import QuantState, dequantize_4bit, quantize_4bit
from lamina.nn.quant4 import FP4_CODE, NF4_CODE, dynamic_code, normal_float_code

# QLoRA's Appendix E table of NF4 values, as printed there (independent of NF4_CODE's source).
PUBLISHED_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]
TABLES = {"nf4": NF4_CODE, "fp4": FP4_CODE}


def test_nf4_table_is_the_published_one_and_its_normal_quantile_construction():
    np.testing.assert_allclose(NF4_CODE, PUBLISHED_NF4, rtol=0, atol=1e-7)
    built = normal_float_code()
    np.testing.assert_allclose(built, PUBLISHED_NF4, rtol=0, atol=1e-7)
    assert np.all(np.diff(built) > 0) and built[7] == 0 and built[0] == -1 and built[-1] == 1
    assert (built > 0).sum() == 8 and (built < 0).sum() == 7          # asymmetric: one more positive value
    # in float64 throughout the construction differs only by float32 rounding of the probabilities
    from scipy.stats import norm
    delta = 1 - (1 / 30 + 1 / 32) / 2
    positive = norm.ppf(np.linspace(delta, 0.5, 9)[:-1]) / norm.ppf(delta)
    np.testing.assert_allclose(np.sort(positive), built[8:], atol=5e-7)


def test_fp4_table_is_the_e2m1_float_of_bitsandbytes():
    # bitsandbytes' FP4: sign bit 3, a 2-bit exponent field e (bits 2-1) and a mantissa bit m:
    # 2^(4 - e) (1 + m / 2) for e > 0, m / 16 for e = 0, all over 12 (the largest)
    for bits in range(16):
        e, m = (bits >> 1) & 0b11, bits & 1
        magnitude = 2.0 ** (4 - e) * (1 + m / 2) if e else m / 16
        sign = -1.0 if bits & 0b1000 else 1.0
        assert FP4_CODE[bits] == np.float32(sign * magnitude / 12), bits
    assert FP4_CODE.max() == 1 and FP4_CODE.min() == -1 and FP4_CODE.dtype == np.float32


def test_packing_puts_the_earlier_value_in_the_high_nibble():
    values = NF4_CODE[[3, 12, 0, 15, 7]]                       # exact codes, the block's maximum is 1
    packed, state = quantize_4bit(values, blocksize=64)
    assert packed.dtype == np.uint8 and packed.tolist() == [0x3C, 0x0F, 0x77]    # odd count: code of 0 last
    np.testing.assert_array_equal(dequantize_4bit(packed, state), values)


def test_a_value_half_way_between_two_codes_takes_the_lower_one():
    half_up, half_down = NF4_CODE[8] / 2, NF4_CODE[6] / 2      # exactly between codes 7 (0) and 8, 6 and 7
    packed, state = quantize_4bit(np.array([1.0, half_up, half_down, -half_down], np.float32))
    assert packed.tolist() == [(15 << 4) | 7, (6 << 4) | 8]


def reference_quantize(w, blocksize, table):
    """Plain NumPy: per block m = max |w|, each w / m to the nearest table value (the lower one
    on a tie), codes packed high nibble first; and the dequantized values."""
    flat = np.asarray(w, np.float32).ravel()
    codes, restored = [], []
    for start in range(0, flat.size, blocksize):
        block = flat[start:start + blocksize]
        m = np.abs(block).max()
        scaled = block * (np.float32(1) / m) if m > 0 else np.zeros_like(block)
        for v in scaled:
            distance = np.abs(table.astype(np.float64) - v)
            best = min(range(16), key=lambda k: (distance[k], table[k], k))
            codes.append(best)
            restored.append(table[best] * m)
    if len(codes) % 2:
        codes.append(int(np.argmin(np.abs(table))))
    packed = [(codes[i] << 4) | codes[i + 1] for i in range(0, len(codes), 2)]
    return np.array(packed, np.uint8), np.array(restored, np.float32).reshape(np.shape(w))


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("shape, blocksize", [((6, 32), 64), ((5, 13), 16), ((97,), 32)])
def test_equals_a_plain_numpy_reference(quant_type, shape, blocksize):
    w = randn(*shape, seed=3, scale=0.1).astype(np.float32)
    packed, state = quantize_4bit(w, blocksize, quant_type)
    expected_packed, expected_values = reference_quantize(w, blocksize, TABLES[quant_type])
    np.testing.assert_array_equal(packed, expected_packed)
    restored = dequantize_4bit(packed, state)
    assert restored.shape == w.shape and restored.dtype == w.dtype
    np.testing.assert_allclose(restored, expected_values, rtol=1e-7, atol=0)
    assert state.absmax.shape == (-(-w.size // blocksize),) and state.nbytes == state.absmax.nbytes


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_error_per_block_is_at_most_half_the_largest_code_gap_times_the_block_maximum(quant_type):
    w = np.concatenate([randn(700, seed=1), 50 * randn(300, seed=2)]).astype(np.float32)   # blocks of two scales
    packed, state = quantize_4bit(w, blocksize=64, quant_type=quant_type)
    error = np.abs(dequantize_4bit(packed, state) - w)
    half_gap = np.diff(np.unique(TABLES[quant_type])).max() / 2
    padded = np.concatenate([error, np.zeros(-w.size % 64)]).reshape(-1, 64)
    bound = half_gap * state.absmax * (1 + 1e-6)
    assert np.all(padded.max(axis=1) <= bound)
    assert np.all(np.abs(dequantize_4bit(packed, state)).reshape(-1)[:64].max() <= state.absmax[0])


def test_all_zero_blocks_and_padding_of_a_last_partial_block():
    w = np.zeros((3, 50), np.float32)
    w[2, 10:] = randn(40, seed=4)                              # blocks 0, 1 all zero; 150 = 2 * 64 + 22
    packed, state = quantize_4bit(w, blocksize=64)
    assert packed.size == 75 and state.absmax.shape == (3,)
    assert state.absmax[0] == 0 and state.absmax[2] == np.abs(w.ravel()[128:]).max()
    restored = dequantize_4bit(packed, state)
    assert np.all(restored.ravel()[:64] == 0) and np.all(np.isfinite(restored))
    np.testing.assert_array_equal(packed[:32], 0x77)          # NF4's 0 is code 7
    assert np.abs(restored - w).max() <= 0.5 * np.diff(NF4_CODE).max() * state.absmax.max()


def test_double_quantization_of_the_block_maxima():
    w = randn(400, 128, seed=5, scale=0.02).astype(np.float32)             # 800 blocks: 4 groups of 256
    packed, plain = quantize_4bit(w, blocksize=64)
    packed_dq, state = quantize_4bit(w, blocksize=64, compress_statistics=True)
    np.testing.assert_array_equal(packed_dq, packed)                         # the 4-bit codes are the same
    assert state.absmax.dtype == np.uint8 and state.nested.absmax.shape == (4,) and state.nested.blocksize == 256
    assert state.offset == pytest.approx(plain.absmax.mean(), rel=1e-6)
    decoded = state.block_absmax()
    relative = np.abs(decoded - plain.absmax) / plain.absmax
    assert relative.max() < 0.01, relative.max()                             # 8 bits for the maxima' spread
    assert state.nbytes < plain.nbytes / 3                                  # about 8.1 bits instead of 32
    restored, exact = dequantize_4bit(packed_dq, state), dequantize_4bit(packed, plain)
    assert np.abs(restored - exact).max() <= 0.01 * np.abs(exact).max()
    code = dynamic_code()
    assert code.shape == (256,) and -1 < code[0] < -0.99 and code[-1] == 1 and 0 in code and np.all(np.diff(code) > 0)


def test_dtypes_in_and_out():
    w = randn(8, 16, seed=6)
    packed, state = quantize_4bit(w)                                       # float64 in: float64 back
    assert state.dtype == np.float64 and dequantize_4bit(packed, state).dtype == np.float64
    assert dequantize_4bit(packed, state, dtype=np.float32).dtype == np.float32
    half, _ = quantize_4bit(w.astype(np.float16))
    np.testing.assert_array_equal(half, quantize_4bit(w.astype(np.float16).astype(np.float32))[0])


def test_errors_name_the_problem():
    w = randn(4, 8).astype(np.float32)
    for bad in (0, 63, -64, 64.0, True):
        with pytest.raises(ValueError, match="blocksize"):
            quantize_4bit(w, blocksize=bad)
    with pytest.raises(ValueError, match="quant_type must be one of"):
        quantize_4bit(w, quant_type="int4")
    with pytest.raises(ValueError, match="floating"):
        quantize_4bit(np.arange(8))
    with pytest.raises(ShapeError, match="empty"):
        quantize_4bit(np.zeros((0, 3), np.float32))
    packed, state = quantize_4bit(w)
    with pytest.raises(ShapeError, match="expected 16 packed uint8 bytes"):
        dequantize_4bit(packed[:-1], state)
    with pytest.raises(ValueError, match="QuantState"):
        dequantize_4bit(packed, {"absmax": state.absmax})
    assert isinstance(state, QuantState)


# -- bitsandbytes, when it quantizes on the CPU here -------------------------------------------

def _bitsandbytes():
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("bitsandbytes.functional")
    try:
        functional.quantize_4bit(torch.zeros(64), blocksize=64, quant_type="nf4")
    except Exception as error:            # no CPU kernel in this build
        pytest.skip(f"bitsandbytes cannot quantize on the CPU here: {error}")
    return torch, functional


def _nibbles(packed):
    packed = np.asarray(packed, np.uint8).ravel()
    return np.stack([packed >> 4, packed & 0x0F], axis=1).ravel()


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("shape, blocksize", [((48, 70), 64), ((33, 129), 128)])
def test_codes_and_block_maxima_equal_bitsandbytes(quant_type, shape, blocksize):
    torch, bnb = _bitsandbytes()
    w = randn(*shape, seed=7, scale=0.05).astype(np.float32)
    packed, state = quantize_4bit(w, blocksize, quant_type)
    theirs, their_state = bnb.quantize_4bit(torch.tensor(w), blocksize=blocksize, quant_type=quant_type)
    np.testing.assert_array_equal(state.absmax, their_state.absmax.numpy())
    ours, their_codes = _nibbles(packed), _nibbles(theirs.numpy())
    if quant_type == "nf4":
        np.testing.assert_array_equal(packed, theirs.numpy().ravel())
    else:   # bitsandbytes' CPU kernel codes a small positive value as -0 (0b1000), this one as +0
        differ = ours != their_codes
        assert np.all((FP4_CODE[ours[differ]] == 0) & (FP4_CODE[their_codes[differ]] == 0))


def test_double_quantization_agrees_with_bitsandbytes():
    torch, bnb = _bitsandbytes()
    w = randn(1000, 64, seed=8, scale=0.05).astype(np.float32)
    packed, state = quantize_4bit(w, 64, "nf4", compress_statistics=True)
    theirs, their_state = bnb.quantize_4bit(torch.tensor(w), blocksize=64, quant_type="nf4",
                                            compress_statistics=True)
    np.testing.assert_array_equal(packed, theirs.numpy().ravel())
    assert float(state.offset) == float(their_state.offset)
    np.testing.assert_array_equal(state.nested.absmax, their_state.state2.absmax.numpy())
    np.testing.assert_allclose(dynamic_code(), their_state.state2.code.numpy(), rtol=2e-7, atol=0)  # 1 rounding
    # bitsandbytes' CPU kernel finds the 8-bit code by bisection, which near a midpoint may take
    # the farther neighbour: the indices agree but for a few such, one step apart, where ours is
    # the nearer
    their_indices = their_state.absmax.numpy()
    differ = np.nonzero(state.absmax != their_indices)[0]
    assert differ.size <= 0.01 * state.absmax.size
    assert np.all(np.abs(state.absmax[differ].astype(int) - their_indices[differ]) == 1)
    _, plain = quantize_4bit(w, 64, "nf4")
    exact = (plain.absmax - state.offset) / state.nested.absmax[np.arange(plain.absmax.size) // 256]
    code = dynamic_code()
    assert np.all(np.abs(code[state.absmax[differ]] - exact[differ])
                  <= np.abs(code[their_indices[differ]] - exact[differ]))
