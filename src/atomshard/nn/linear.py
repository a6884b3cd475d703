"""e3nn's ``o3.Linear`` applied without its per-block ``narrow``.

e3nn's generated forward takes each input irrep block with ``x.narrow``; the backward of
every ``narrow`` allocates and zero-fills a gradient of the *whole* input and autograd then
adds them up, so a linear over ``B`` input blocks moves ``B`` full-size gradients. The
NequIP convolution's output has one block per tensor-product path (about 40 per layer
at l_max = 3), so that zero-filling was an eighth of a step. :func:`apply_linear` computes
the same thing — the same ``einsum`` per instruction, summed per output block in the same
order, with the same path weights and biases — from ``split`` blocks, whose backward is
one ``cat``. The module (its parameters, state-dict keys and weight layout) is unchanged.
"""

from __future__ import annotations

import torch
from e3nn import o3


def apply_linear(lin: o3.Linear, x: torch.Tensor) -> torch.Tensor:
    """``lin(x)`` for an e3nn ``Linear`` with internal, shared weights.

    Shapes:
        x: ``[n, lin.irreps_in.dim]``
        returns: ``[n, lin.irreps_out.dim]``
    """
    if not (lin.internal_weights and lin.shared_weights) or x.dim() != 2:
        return lin(x)
    n = x.shape[0]
    irreps_in, irreps_out = lin.irreps_in, lin.irreps_out
    blocks = x.split([mul_ir.dim for mul_ir in irreps_in], dim=1)
    weighted = [ins for ins in lin.instructions if ins.i_in != -1 and 0 not in ins.path_shape]
    biases = [ins for ins in lin.instructions if ins.i_in == -1 and 0 not in ins.path_shape]
    sizes = [ins.path_shape[0] * ins.path_shape[1] for ins in weighted]
    ws = lin.weight.split(sizes) if weighted else []
    bs = lin.bias.split([ins.path_shape[0] for ins in biases]) if biases else []
    terms: dict[int, list[torch.Tensor]] = {}
    wi = bi = 0
    for ins in lin.instructions:
        if 0 in ins.path_shape:
            continue
        mul_ir_out = irreps_out[ins.i_out]
        if ins.i_in == -1:
            term = (ins.path_weight * bs[bi]).reshape(1, mul_ir_out.dim)
            bi += 1
        else:
            mul_ir_in = irreps_in[ins.i_in]
            w = ws[wi].reshape(ins.path_shape)
            wi += 1
            if mul_ir_in.dim == 0 or mul_ir_out.dim == 0:
                continue
            xi = blocks[ins.i_in].reshape(n, mul_ir_in.mul, mul_ir_in.ir.dim)
            term = (ins.path_weight * torch.einsum("uw,zui->zwi", w, xi)).reshape(n, mul_ir_out.dim)
        terms.setdefault(ins.i_out, []).append(term)
    outs = []
    for i_out, mul_ir_out in enumerate(irreps_out):
        if mul_ir_out.mul == 0:
            continue
        parts = terms.get(i_out)
        if not parts:
            outs.append(x.new_zeros((n, mul_ir_out.dim)))
            continue
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        outs.append(total.expand(n, mul_ir_out.dim) if total.shape[0] != n else total)
    if not outs:
        return x.new_zeros((n, irreps_out.dim))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
