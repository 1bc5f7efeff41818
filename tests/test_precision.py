import warnings

import pytest
import torch

from bertkit import precision


def test_resolve():
    assert precision.resolve("fp32") == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # where the CPU emulates bf16 (tested below)
        assert precision.resolve("bf16") == torch.bfloat16
    expected = torch.bfloat16 if precision.bf16_is_fast("cpu") else torch.float32
    assert precision.resolve("auto") == expected
    with pytest.raises(ValueError, match="precision must be"):
        precision.resolve("fp16")


def test_autocast_runs_matmuls_in_bf16_only_when_asked():
    a = torch.randn(4, 4)
    with precision.autocast(torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with precision.autocast(torch.float32):
        assert (a @ a).dtype == torch.float32


def test_evaluating_restores_the_training_mode():
    model = torch.nn.Linear(2, 2)
    with precision.evaluating(model) as device:
        assert not model.training and device == torch.device("cpu")
    assert model.training
    model.eval()
    with pytest.raises(RuntimeError), precision.evaluating(model):
        model.train()
        raise RuntimeError
    assert not model.training


def test_asking_for_bf16_where_the_cpu_emulates_it_warns_once(monkeypatch):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device="cpu": False)
    precision._warn_emulated_bf16.cache_clear()
    with pytest.warns(UserWarning, match=r"emulates bf16: a matrix product runs [0-9.]+x slower than in fp32 here; "
                                         r"use precision 'auto'"):
        assert precision.resolve("bf16") == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.resolve("bf16")  # once per process
        precision.resolve("auto")
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device="cpu": True)
    precision._warn_emulated_bf16.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native bf16: nothing to say
        assert precision.resolve("bf16") == torch.bfloat16


def test_auto_picks_fp32_where_an_instruction_set_limit_leaves_bf16_emulated(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 on a CPU with AVX-512 BF16: the instructions are there, bf16 products are not
    fast (65x fp32's measured so), and 'auto' must not pick bf16."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "emulated_bf16_slowdown", lambda: 65.0)
    precision._warn_emulated_bf16.cache_clear()
    assert precision.resolve("auto") == torch.float32
    with pytest.warns(UserWarning, match="bf16 instructions left unused by an instruction-set limit"):
        precision.resolve("bf16")
    monkeypatch.setattr(precision, "emulated_bf16_slowdown", lambda: 0.4)
    assert precision.resolve("auto") == torch.bfloat16


def test_int8_swaps_every_linear_layer_for_the_context_and_back():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    x = torch.randn(5, 8)
    with torch.no_grad(), precision.evaluating(model, "int8"):
        assert all(type(m) is precision.Int8Linear for m in (model[0], model[2]))
        got = model(x)
    assert type(model[0]) is torch.nn.Linear and type(model[2]) is torch.nn.Linear
    torch.testing.assert_close(got, model(x), atol=0.05, rtol=0.05)


def test_int8_product_is_exact_on_its_quantized_values():
    """The int8 layer computes the exact product of its quantized inputs and weights (no int16
    saturation, whatever the CPU), each token with its own scale: a row of small values next to a
    row with an outlier keeps its precision."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the weights too: with some draws the small row's products nearly cancel
    linear = torch.nn.Linear(64, 8)
    x = torch.randn(3, 64, generator=g) * torch.tensor([[1.0], [0.01], [100.0]])
    x[2, 0] = 3000.0  # an outlier in the third row only
    layer = precision.Int8Linear(linear)
    w = linear.weight.detach().double()
    w_scale = w.abs().amax(1, keepdim=True) / 63
    x_scale = x.double().abs().amax(1, keepdim=True) / 127
    expected = (x.double() / x_scale).round() @ (w / w_scale).round().T * x_scale * w_scale.T + linear.bias.double()
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-6)
    product = (x @ linear.weight.T).detach()
    assert (layer(x) - linear.bias - product)[1].abs().max() < 0.02 * product[1].abs().max()  # the small row


def test_int8_takes_any_leading_shape_zero_rows_and_no_bias():
    linear = torch.nn.Linear(16, 4, bias=False)
    x = torch.randn(2, 3, 16)
    x[1, 2] = 0.0  # a zero row (a layout's spare rows are zeros)
    got = precision.Int8Linear(linear)(x)
    assert got.shape == (2, 3, 4) and torch.isfinite(got).all() and torch.equal(got[1, 2], torch.zeros(4))
    torch.testing.assert_close(got, linear(x).detach(), atol=0.05, rtol=0.05)


amx_int8 = pytest.mark.skipif(not precision.int8_runs_on_amx(),
                               reason="the CPU has no AMX, or oneDNN is held below it: int8 runs torch._int_mm only")


@amx_int8
@pytest.mark.parametrize("bias", [True, False])
def test_int8_packed_product_for_amx_gives_torch_int_mms_results(monkeypatch, spy, bias):
    """Batches of AMX_INT8_MIN_ROWS tokens or more take the product on weights packed for AMX: the same
    int32 sums and scales, so the same floats as torch._int_mm's path, bit for bit."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(384, 1152, bias=bias)
    layer = precision.Int8Linear(linear)
    int_mm_calls = spy(torch, "_int_mm")
    x = torch.randn(2, precision.AMX_INT8_MIN_ROWS, 384)
    packed = layer(x)
    assert not int_mm_calls  # the packed product ran
    monkeypatch.setattr(precision, "AMX_INT8_MIN_ROWS", 10 ** 9)
    assert torch.equal(packed, layer(x)) and int_mm_calls
    torch.testing.assert_close(packed, linear(x).detach(), atol=0.05, rtol=0.05)


@pytest.fixture
def fresh_amx_check():
    precision.int8_runs_on_amx.cache_clear()
    yield
    precision.int8_runs_on_amx.cache_clear()


@amx_int8
@pytest.mark.parametrize("limits, packs", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, False),  # oneDNN's reference kernel, thousands of times slower
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),  # a plain gemm, slower than torch._int_mm's
    ({"DNNL_MAX_CPU_ISA": "avx2"}, False),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "DNNL_MAX_CPU_ISA": "AVX2"}, True),  # oneDNN reads ONEDNN_ first
    ({"ONEDNN_MAX_CPU_ISA": ""}, True),
    ({}, True)])
def test_int8_packs_for_amx_unless_onednn_is_held_below_it(monkeypatch, fresh_amx_check, limits, packs):
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    assert (precision.Int8Linear(torch.nn.Linear(8, 8)).packed is not None) is packs


def test_int8_copies_are_made_once_and_again_when_the_weights_change():
    linear = torch.nn.Linear(4, 4)
    first = precision.int8_linear(linear)
    assert type(first) is precision.Int8Linear and precision.int8_linear(linear) is first
    with torch.no_grad():
        linear.weight.mul_(2)  # as an optimizer step would
    second = precision.int8_linear(linear)
    assert second is not first
    x = torch.randn(3, 4)
    torch.testing.assert_close(second(x), linear(x), atol=0.05, rtol=0.05)


TOLERANCE = 1e-2  # bf16 keeps 8 bits: autocast's and the fused GELU's roundings differ by a few thousandths here


def packs_bf16_layers(monkeypatch, packed: bool) -> None:
    """bf16 inference takes oneDNN-packed layers (`packed`, where this CPU has them) or plain bf16 copies."""
    if packed and not precision.packs_linears("cpu", torch.bfloat16):
        pytest.skip("this CPU has no AVX-512 or oneDNN has no bf16 here: bf16 layers are not packed")
    monkeypatch.setattr(precision, "packs_linears", lambda device="cpu", dtype=torch.float32: packed)


@pytest.mark.parametrize("packed", [False, True])
def test_bf16_layers_give_autocasts_outputs_and_are_made_once(monkeypatch, packed):
    """bf16 inference runs copies of the linear layers made once (oneDNN-packed where the CPU takes
    them, else plain bf16 copies) with autocast's outputs; the plain layers come back after."""
    from bertkit import Encoder, add_pretraining_heads, preset
    packs_bf16_layers(monkeypatch, packed)
    torch.manual_seed(0)
    model = add_pretraining_heads(Encoder(preset("tiny", vocab_size=500)), mlm=True).eval()  # a tied decoder too
    with torch.no_grad():  # biases start at zero: give them values the copies must carry
        for bias in (m.bias for m in model.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None):
            bias.normal_(0, 0.5)
    ids = torch.randint(5, 500, (3, 9))
    cpu = torch.device("cpu")
    with torch.no_grad(), precision.autocast(torch.bfloat16):
        expected = model.mlm_head(model(ids).last_hidden_state)
        with precision.fast_linears(model, torch.bfloat16, cpu):
            copy = model.layers[0].feed_forward.up
            assert type(copy) is (precision.PackedLinear if packed else torch.nn.Linear)
            assert (copy.packed if packed else copy.weight).dtype == torch.bfloat16
            got = model.mlm_head(model(ids).last_hidden_state)
        with precision.fast_linears(model, torch.bfloat16, cpu):
            assert model.layers[0].feed_forward.up is copy  # not made again
    assert all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32
               for m in model.modules() if isinstance(m, torch.nn.Linear))
    if packed:  # the GELU fused into oneDNN's product, on the fp32 sums: within bf16's rounding of autocast's
        torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=TOLERANCE)
    else:
        assert torch.equal(got, expected)
    up = model.layers[0].feed_forward.up
    replacement = torch.nn.Parameter(2 * up.weight.detach())
    with torch.no_grad():  # a new tensor whose version count equals the old one's (as a model loaded alike can have)
        while replacement._version < up.weight._version:
            replacement.add_(0)
    up.weight = replacement
    with precision.fast_linears(model, torch.bfloat16, cpu):
        second = model.layers[0].feed_forward.up
        assert second is not copy
    with torch.no_grad():
        up.weight.mul_(2)  # as a load or an optimizer step would
    with precision.fast_linears(model, torch.bfloat16, cpu):
        assert model.layers[0].feed_forward.up is not second


@pytest.mark.parametrize("packed", [False, True])
def test_bf16_layers_made_in_inference_mode_serve_a_call_with_gradients(monkeypatch, packed):
    packs_bf16_layers(monkeypatch, packed)
    model, cpu = torch.nn.Sequential(torch.nn.Linear(8, 4)), torch.device("cpu")
    with torch.inference_mode(), precision.fast_linears(model, torch.bfloat16, cpu):
        copy = model[0]  # made here
    x = torch.randn(3, 8, requires_grad=True)
    with precision.autocast(torch.bfloat16), precision.fast_linears(model, torch.bfloat16, cpu):
        assert model[0] is copy
        model(x).float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN")
@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_packed_fp32_layers_give_the_plain_outputs_for_the_context_and_back(monkeypatch, spy, act):
    """fp32 inference runs oneDNN-packed copies of the linear layers (the feed-forward's activation, and
    both residual sums, fused into their products) with the plain layers' outputs; the plain layers come
    back after."""
    from bertkit import Encoder, add_pretraining_heads, preset
    monkeypatch.setattr(precision, "packs_linears", lambda device="cpu", dtype=torch.float32: True)
    sums = spy(precision.PackedLinear, "plus")  # the residual sums taken inside the product: two a layer
    torch.manual_seed(0)
    model = add_pretraining_heads(Encoder(preset("tiny", vocab_size=500, hidden_act=act)), mlm=True).eval()
    ids = torch.randint(5, 500, (3, 9))
    with torch.no_grad():
        expected = model.mlm_head(model(ids).last_hidden_state)
        with precision.evaluating(model, "fp32"):
            assert type(model.layers[0].feed_forward.up) is precision.PackedLinear
            got = model.mlm_head(model(ids).last_hidden_state)
    assert all(type(m) is torch.nn.Linear for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert len(sums) == 2 * len(model.layers)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN")
def test_packed_layer_with_gradients_on_computes_the_plain_product():
    linear = torch.nn.Linear(6, 5)
    x = torch.randn(4, 6, requires_grad=True)
    packed = precision.PackedLinear(linear)
    packed(x).sum().backward()
    assert x.grad is not None and linear.weight.grad is not None
    torch.testing.assert_close(packed(x), linear(x))


def test_int8_is_for_inference_on_the_cpu():
    from bertkit.config import TrainConfig
    assert precision.resolve("int8") == torch.qint8
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="int8")
    with pytest.raises(ValueError, match="'int8' runs on the CPU only"):
        precision.resolve("int8", "meta")


def test_importing_bertkit_settles_onemkls_vector_maths():
    """Each function of VECTOR_MATHS has made its first call on one thread (precision module docstring)."""
    assert precision.settle_vector_maths.cache_info().currsize == 1
