"""The NKI emulator on its own: every emulated call against NumPy, the enforced hardware limits,
and unsupported calls raising — so kernel tests check the kernels, not the emulator."""

from __future__ import annotations

import numpy as np
import pytest
from bmojo_neuron import emulator as nki
from bmojo_neuron.emulator import EmulatorError, EmulatorLimitError
from bmojo_neuron.emulator import isa as nisa
from bmojo_neuron.emulator import language as nl

rng = np.random.default_rng(0)


def tile(shape, buffer=nl.sbuf, dtype=np.float32, values=None):
    t = nl.ndarray(shape, dtype=dtype, buffer=buffer)
    t.data[...] = rng.standard_normal(shape) if values is None else values
    return t


def run(fn, *arrays):
    """Run ``fn`` as a kernel; fn receives HBM tensors and returns HBM tensors."""
    return nki.jit(fn)(*arrays)


# ----- memory, load/store, ranges -----
def test_load_store_roundtrip_and_slices():
    a = rng.standard_normal((4, 256, 10)).astype(np.float32)

    def k(A):
        out = nl.ndarray((128, 10), dtype=nl.float32, buffer=nl.shared_hbm)
        t = nl.load(A[2, nl.ds(64, 128), :])
        nl.store(out, value=t)
        return out

    np.testing.assert_array_equal(run(k, a), a[2, 64:192])


def test_fresh_memory_is_nan_and_zeros_is_zero():
    assert np.isnan(nl.ndarray((2, 3), dtype=nl.float32).data).all()
    assert not nl.zeros((2, 3), dtype=nl.float32).data.any()


def test_load_casts_and_store_casts_to_hbm_dtype():
    a = rng.standard_normal((3, 5)).astype(np.float16)

    def k(A):
        t = nl.load(A, dtype=nl.float32)
        assert t.dtype == np.float32 and t.buffer is nl.sbuf
        out = nl.ndarray((3, 5), dtype=nl.float16, buffer=nl.shared_hbm)
        nl.store(out, value=t)
        return out

    np.testing.assert_array_equal(run(k, a), a)


def test_store_shape_mismatch_and_wrong_buffers_raise():
    t = tile((4, 4))
    hbm = nl.ndarray((4, 5), dtype=nl.float32, buffer=nl.shared_hbm)
    with pytest.raises(EmulatorError, match="shape"):
        nl.store(hbm, value=t)
    with pytest.raises(EmulatorError, match=r"nl\.load src"):
        nl.load(t)  # SBUF -> SBUF is not a load
    with pytest.raises(EmulatorError, match="out of bounds"):
        hbm[0:5]


def test_ranges_are_plain_ranges():
    assert list(nl.affine_range(3)) == list(nl.sequential_range(3)) == list(nl.static_range(3)) == [0, 1, 2]
    assert nl.ds(5, 3) == slice(5, 8)


# ----- limits -----
def test_partition_limit():
    nl.ndarray((128, 4), dtype=nl.float32)
    with pytest.raises(EmulatorLimitError, match="partition axis 129 > 128"):
        nl.ndarray((129, 4), dtype=nl.float32)
    with pytest.raises(EmulatorLimitError, match="partition"):
        nl.load(nl.ndarray((200, 4), dtype=nl.float32, buffer=nl.shared_hbm))


def test_psum_bank_size_and_bank_count():
    nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
    with pytest.raises(EmulatorLimitError, match="PSUM tile free size 513 > 512"):
        nl.ndarray((128, 513), dtype=nl.float32, buffer=nl.psum)

    def k():
        held = [nl.ndarray((8, 8), dtype=nl.float32, buffer=nl.psum) for _ in range(8)]
        with pytest.raises(EmulatorLimitError, match="PSUM overflow"):
            nl.ndarray((8, 8), dtype=nl.float32, buffer=nl.psum)
        del held  # released: allocating again works
        nl.ndarray((8, 8), dtype=nl.float32, buffer=nl.psum)
        return nl.ndarray((1, 1), dtype=nl.float32, buffer=nl.shared_hbm)

    nki.jit(k)()


def test_sbuf_budget_per_partition():
    def k():
        big = nl.ndarray((128, 40 * 1024), dtype=nl.float32)  # 160 KiB per partition
        with pytest.raises(EmulatorLimitError, match="SBUF overflow"):
            nl.ndarray((1, 9 * 1024), dtype=nl.float32)  # +36 KiB > 192 KiB
        del big
        nl.ndarray((1, 9 * 1024), dtype=nl.float32)
        return nl.ndarray((1, 1), dtype=nl.float32, buffer=nl.shared_hbm)

    nki.jit(k)()


def test_unsupported_calls_raise_naming_the_call():
    with pytest.raises(NotImplementedError, match=r"nki\.language\.gelu"):
        nl.gelu
    with pytest.raises(NotImplementedError, match=r"nki\.isa\.dma_transpose"):
        nisa.dma_transpose
    with pytest.raises(NotImplementedError, match=r"nki\.language\.exp"):
        nl.exp(tile((2, 2)))
    with pytest.raises(NotImplementedError, match="dtype"):
        nl.ndarray((2, 2), dtype=np.int8)
    with pytest.raises(NotImplementedError, match="options"):
        nki.jit(lambda: None, mode="simulation")


# ----- compute instructions, each against NumPy -----
def test_nc_matmul():
    s, m = tile((100, 70)), tile((100, 300))
    d = nl.ndarray((70, 300), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_matmul(dst=d, stationary=s, moving=m)
    np.testing.assert_allclose(d.data, s.data.T @ m.data, rtol=1e-5, atol=1e-5)
    with pytest.raises(EmulatorLimitError, match="stationary free size 129"):
        nisa.nc_matmul(dst=d, stationary=tile((100, 129)), moving=m)
    with pytest.raises(EmulatorLimitError, match="moving free size 513"):
        nisa.nc_matmul(dst=d, stationary=s, moving=tile((100, 513)))
    with pytest.raises(EmulatorError, match=r"in nl\.psum"):
        nisa.nc_matmul(dst=tile((70, 300)), stationary=s, moving=m)
    with pytest.raises(EmulatorError, match="partition sizes differ"):
        nisa.nc_matmul(dst=d, stationary=tile((99, 70)), moving=m)


def test_nc_transpose():
    x = tile((100, 37))
    d = nl.ndarray((37, 100), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_transpose(dst=d, data=x)
    np.testing.assert_array_equal(d.data, x.data.T)
    with pytest.raises(EmulatorLimitError):
        nisa.nc_transpose(dst=d, data=tile((100, 200)))


@pytest.mark.parametrize(
    "op,ref",
    [
        (nl.exp, np.exp),
        (nl.square, np.square),
        (nl.copy, lambda x: x),
        (nl.silu, lambda x: x / (1 + np.exp(-x))),
        (nl.softplus, lambda x: np.log1p(np.exp(x))),
        (nl.reciprocal, lambda x: 1 / x),
    ],
)
def test_activation_ops_scale_bias(op, ref):
    x, bias = tile((16, 9)), tile((16, 1))
    scale = tile((16, 1))
    d = nl.ndarray((16, 9), dtype=nl.float32)
    nisa.activation(dst=d, op=op, data=x, bias=bias, scale=scale)
    np.testing.assert_allclose(d.data, ref(x.data * scale.data + bias.data), rtol=1e-5, atol=1e-6)
    nisa.activation(dst=d, op=op, data=x, scale=0.5)
    np.testing.assert_allclose(d.data, ref(x.data * 0.5), rtol=1e-5, atol=1e-6)


def test_activation_log_rsqrt_and_fused_sum():
    x = tile((8, 5), values=rng.uniform(0.5, 2.0, (8, 5)))
    d, r = nl.ndarray((8, 5), dtype=nl.float32), nl.ndarray((8, 1), dtype=nl.float32)
    nisa.activation(dst=d, op=nl.log, data=x)
    np.testing.assert_allclose(d.data, np.log(x.data), rtol=1e-6)
    nisa.activation(dst=d, op=nl.rsqrt, data=x, reduce_op=nl.add, reduce_res=r, reduce_cmd=nisa.reduce_cmd.reset_reduce)
    np.testing.assert_allclose(d.data, 1 / np.sqrt(x.data), rtol=1e-6)
    np.testing.assert_allclose(r.data[:, 0], (1 / np.sqrt(x.data)).sum(1), rtol=1e-5)
    with pytest.raises(NotImplementedError, match="reduce_cmd"):
        nisa.activation(dst=d, op=nl.exp, data=x, reduce_op=nl.add, reduce_res=r)
    with pytest.raises(EmulatorError, match="activation op"):
        nisa.activation(dst=d, op=nl.add, data=x)


@pytest.mark.parametrize(
    "op,ref",
    [
        (nl.add, np.add),
        (nl.subtract, np.subtract),
        (nl.multiply, np.multiply),
        (nl.maximum, np.maximum),
        (nl.greater, np.greater),
        (nl.less_equal, np.less_equal),
    ],
)
def test_tensor_tensor(op, ref):
    a, b = tile((12, 7)), tile((12, 7), buffer=nl.psum)
    d = nl.ndarray((12, 7), dtype=nl.float32)
    nisa.tensor_tensor(dst=d, data1=a, data2=b, op=op)
    np.testing.assert_allclose(d.data, ref(a.data, b.data).astype(np.float32), rtol=1e-6)
    with pytest.raises(EmulatorError, match="both be in PSUM"):
        nisa.tensor_tensor(dst=d, data1=b, data2=b, op=op)
    with pytest.raises(EmulatorError, match="shapes differ"):
        nisa.tensor_tensor(dst=d, data1=a, data2=tile((12, 6)), op=op)


def test_tensor_scalar_vector_operands_and_reverse():
    x, v = tile((10, 6)), tile((10, 1))
    d = nl.ndarray((10, 6), dtype=nl.float32)
    nisa.tensor_scalar(dst=d, data=x, op0=nl.subtract, operand0=v, reverse0=True, op1=nl.multiply, operand1=2.0)
    np.testing.assert_allclose(d.data, (v.data - x.data) * 2.0, rtol=1e-6)
    nisa.tensor_scalar(dst=d, data=x, op0=nl.greater, operand0=0.25)
    np.testing.assert_array_equal(d.data, (x.data > 0.25).astype(np.float32))
    with pytest.raises(EmulatorError, match="vector operand"):
        nisa.tensor_scalar(dst=d, data=x, op0=nl.add, operand0=tile((10, 2)))


@pytest.mark.parametrize("op,ref", [(nl.add, np.sum), (nl.maximum, np.max), (nl.minimum, np.min)])
def test_tensor_reduce(op, ref):
    x = tile((9, 4, 5))
    d = nl.ndarray((9, 1, 1), dtype=nl.float32)
    nisa.tensor_reduce(dst=d, op=op, data=x, axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(d.data, ref(x.data, axis=(1, 2), keepdims=True), rtol=1e-5)
    with pytest.raises(EmulatorError, match="axis"):
        nisa.tensor_reduce(dst=d, op=op, data=x, axis=1)


def test_tensor_tensor_scan_matches_the_documented_recurrence():
    a, b, init = tile((5, 40)), tile((5, 40)), tile((5, 1))
    d = nl.ndarray((5, 40), dtype=nl.float32)
    nisa.tensor_tensor_scan(dst=d, data0=a, data1=b, initial=init, op0=nl.multiply, op1=nl.add)
    want = np.empty((5, 40))
    prev = init.data[:, 0].astype(np.float64)
    for i in range(40):
        prev = a.data[:, i] * prev + b.data[:, i]
        want[:, i] = prev
    np.testing.assert_allclose(d.data, want, rtol=1e-4, atol=1e-5)
    nisa.tensor_tensor_scan(dst=d, data0=a, data1=b, initial=0.0, op0=nl.multiply, op1=nl.add)
    assert d.data[0, 0] == pytest.approx(b.data[0, 0])
    with pytest.raises(NotImplementedError, match="reverse"):
        nisa.tensor_tensor_scan(dst=d, data0=a, data1=b, initial=0.0, op0=nl.multiply, op1=nl.add, reverse0=True)
    p = tile((5, 40), buffer=nl.psum)
    with pytest.raises(EmulatorError, match="both be in PSUM"):
        nisa.tensor_tensor_scan(dst=d, data0=p, data1=p, initial=0.0, op0=nl.multiply, op1=nl.add)


def test_tensor_copy_memset_and_float64_widening():
    x = tile((3, 4), buffer=nl.psum)
    d = nl.ndarray((3, 4), dtype=np.float16)
    nisa.tensor_copy(dst=d, src=x)
    np.testing.assert_array_equal(d.data, x.data.astype(np.float16))
    nisa.memset(dst=d, value=2.5)
    assert (d.data == 2.5).all()
    a = tile((4, 3), dtype=np.float64)
    p = nl.ndarray((3, 3), dtype=np.float64, buffer=nl.psum)
    nisa.nc_matmul(dst=p, stationary=a, moving=a)
    np.testing.assert_allclose(p.data, a.data.T @ a.data, rtol=1e-14)  # computed in float64
    with pytest.raises(EmulatorError, match="accumulates in float32"):
        nisa.nc_matmul(
            dst=nl.ndarray((3, 3), dtype=np.float64, buffer=nl.psum), stationary=tile((4, 3)), moving=tile((4, 3))
        )


def test_jit_returns_numpy_and_rejects_on_chip_returns():
    def bad(A):
        return nl.load(A)

    with pytest.raises(EmulatorError, match="HBM tensors"):
        nki.jit(bad)(np.zeros((2, 2), np.float32))


def test_jit_checks_array_inputs_like_ndarray():
    """HBM inputs follow nl.ndarray's rules: an emulated dtype, no empty axis; errors name the argument."""

    def k(X, Y):
        out = nl.ndarray((2, 3), dtype=nl.float32, buffer=nl.shared_hbm)
        nl.store(out, value=nl.load(X[:, :], dtype=nl.float32))
        return out

    ok = np.ones((2, 3), np.float32)
    for dt in (np.int64, np.uint8, np.bool_):
        with pytest.raises(
            NotImplementedError, match=rf"^kernel argument 0 \(X\): dtype {np.dtype(dt)} is not emulated"
        ):
            nki.jit(k)(np.ones((2, 3), dt), ok)
    with pytest.raises(EmulatorError, match=r"^kernel argument 1 \(Y\): expected positive sizes, got shape \(4, 0\)"):
        nki.jit(k)(ok, np.zeros((4, 0), np.float32))
    for dt in (np.float32, np.float16, np.float64, np.int32):  # the emulated dtypes pass
        np.testing.assert_array_equal(nki.jit(k)(np.ones((2, 3), dt), ok), ok)
