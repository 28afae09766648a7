"""Multi-head attention whose projections are modules, so that they can be tensorized.

``nn.MultiheadAttention`` computes with raw weight tensors (``in_proj_weight``, a ``(3E, E)``
stack of the query, key and value projections, and ``out_proj.weight``), which a decomposed
layer cannot stand in for. :class:`TensorizedMultiheadAttention` holds the four projections as
linear modules (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``: tensorized layers with MARS
masks, or ``nn.Linear``), builds each one's weight once per forward and computes attention with
``torch.nn.functional.multi_head_attention_forward``, as the torch module does. It is a subclass
of ``nn.MultiheadAttention``: code that checks the type or reads ``embed_dim``, ``num_heads``,
``batch_first``, ``in_proj_weight`` or ``in_proj_bias`` (``nn.TransformerEncoderLayer``'s
inference fast path does) finds them, the weights built from the projections.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import positive_int
from .base import warn_user
from .layers import TensorizedLinear

#: the projections, in the order of ``nn.MultiheadAttention``'s ``in_proj_weight`` rows
PROJECTIONS = ("q_proj", "k_proj", "v_proj")


class TensorizedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` (same arguments, same forward) with its four projections as
    :class:`~tnmars.nn.TensorizedLinear` layers in ``format`` at ``rank``, each with MARS masks
    (``options``: ``mars``, ``pi``, ``alpha``, ``temperature``, ``min_rank``, ``mode``).
    ``format`` and ``rank`` take what :func:`~tnmars.nn.tensorize` and :meth:`from_attention`
    take: ``"lowrank"`` (:class:`~tnmars.nn.LowRankLinear` projections) besides the matrix
    formats; an int or one per bond, ``None`` (each layer class's default), a float share of
    each dense projection's parameters, or ``"full"`` (ranks at which any weight is exact).

    The query projection maps ``embed_dim`` to ``embed_dim``, the key and value projections
    ``kdim`` and ``vdim`` to ``embed_dim``, the output projection ``embed_dim`` to itself.
    :meth:`from_attention` decomposes a trained ``nn.MultiheadAttention``;
    :func:`~tnmars.nn.tensorize` converts those of a whole model. Each forward builds the four
    dense weights from their cores (with one mask draw each in training), so attention costs
    what the dense module's does; the parameters are what is compressed.

    >>> attn = TensorizedMultiheadAttention(16, 4, rank=2, batch_first=True)
    >>> x = torch.randn(3, 5, 16)
    >>> out, weights = attn(x, x, x)
    >>> out.shape, weights.shape
    (torch.Size([3, 5, 16]), torch.Size([3, 5, 5]))
    >>> sum(p.numel() for p in attn.parameters() if p.ndim > 1) < 4 * 16 * 16
    True
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, format: str = "tt", rank: Any = None, *,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 **options: Any) -> None:
        nn.Module.__init__(self)  # (not nn.MultiheadAttention's: it would create the dense weights)
        _configure(self, embed_dim, num_heads, dropout, kdim, vdim, batch_first, add_zero_attn)
        _check_format(format, "TensorizedMultiheadAttention")
        from .convert import check_rank_argument

        check_rank_argument(rank, "TensorizedMultiheadAttention")
        sizes = {"q_proj": self.embed_dim, "k_proj": self.kdim, "v_proj": self.vdim, "out_proj": self.embed_dim}
        for name, n_in in sizes.items():
            setattr(self, name, _projection(n_in, self.embed_dim, format, rank, bias=bias, device=device, dtype=dtype,
                                            **options))
        factory = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        if add_bias_kv:  # (as nn.MultiheadAttention initialises them)
            self.bias_k = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, 1, self.embed_dim, **factory)))
            self.bias_v = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, 1, self.embed_dim, **factory)))
        else:
            self.bias_k = self.bias_v = None

    @classmethod
    def from_attention(cls, attention: nn.MultiheadAttention, format: str = "tt", rank: Any = None,
                       **options: Any) -> TensorizedMultiheadAttention:
        """The module whose projections are ``attention``'s trained ones, each decomposed by
        :meth:`TensorizedLinear.from_linear` (``format``, ``rank`` and ``options`` as there; at
        ``rank="full"`` it computes ``attention``'s function to float rounding in eval mode, or
        in warm-up: a training forward draws the masks, see the compressing guide), with its biases,
        ``bias_k`` / ``bias_v``, dropout, train or eval mode and frozen parameters.
        ``format="lowrank"``: :meth:`LowRankLinear.from_linear` (as ``tensorize(attention="lowrank")``)."""
        from .convert import (
            CHANGED_WEIGHT,
            changed_weights_message,
            check_rank_argument,
            from_linear,
            lowrank_from_linear,
        )

        what = "TensorizedMultiheadAttention.from_attention"
        _check_format(format, what, network=False)
        check_rank_argument(rank, what)
        dense = cls.with_dense_projections(attention)
        changed, frozen = {}, {}
        for name in (*PROJECTIONS, "out_proj"):
            linear = getattr(dense, name)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                layer = (lowrank_from_linear(linear, rank, **options) if format == "lowrank"
                         else from_linear(linear, format, rank, **options))
            for w in caught:  # (the projections' changed weights: said once for the four, below)
                if CHANGED_WEIGHT in str(w.message):
                    (changed if linear.weight.requires_grad else frozen)[name] = layer.conversion_error
                else:
                    warn_user(f"{what}, {name}: {w.message}", w.category)
            setattr(dense, name, layer)
        for moved, is_frozen in ((changed, False), (frozen, True)):
            if moved:
                warn_user(changed_weights_message(what, moved, frozen=is_frozen))
        return dense

    @classmethod
    def with_dense_projections(cls, attention: nn.MultiheadAttention) -> TensorizedMultiheadAttention:
        """``attention`` with its projections as four ``nn.Linear`` holding copies of its weights
        (the same function, exactly): the starting point of a conversion, whose ``nn.Linear``
        projections :func:`~tnmars.nn.tensorize` then converts like any others."""
        if not isinstance(attention, nn.MultiheadAttention):
            raise TypeError(f"TensorizedMultiheadAttention.from_attention needs a torch.nn.MultiheadAttention; got "
                            f"{type(attention).__name__}")
        if isinstance(attention, TensorizedMultiheadAttention):
            raise TypeError("this module's projections are modules already; convert them with tensorize or from_linear")
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        _configure(module, attention.embed_dim, attention.num_heads, attention.dropout, attention.kdim,
                   attention.vdim, attention.batch_first, attention.add_zero_attn)
        if attention._qkv_same_embed_dim:
            weights = attention.in_proj_weight.detach().chunk(3)
            frozen = [not attention.in_proj_weight.requires_grad] * 3
        else:
            raw = (attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight)
            weights = tuple(w.detach() for w in raw)
            frozen = [not w.requires_grad for w in raw]
        in_bias = attention.in_proj_bias
        biases = (None,) * 3 if in_bias is None else in_bias.detach().chunk(3)
        out = attention.out_proj
        for name, w, b, fixed in zip((*PROJECTIONS, "out_proj"), (*weights, out.weight.detach()),
                                     (*biases, None if out.bias is None else out.bias.detach()),
                                     (*frozen, not out.weight.requires_grad)):
            linear = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                linear.weight.copy_(w)
                if b is not None:
                    linear.bias.copy_(b)
            linear.weight.requires_grad_(not fixed)
            if b is not None:
                source = out.bias if name == "out_proj" else in_bias
                linear.bias.requires_grad_(source.requires_grad)
            setattr(module, name, linear)
        module.bias_k = None if attention.bias_k is None else nn.Parameter(attention.bias_k.detach().clone(),
                                                                           attention.bias_k.requires_grad)
        module.bias_v = None if attention.bias_v is None else nn.Parameter(attention.bias_v.detach().clone(),
                                                                           attention.bias_v.requires_grad)
        module.train(attention.training)
        return module

    # what nn.MultiheadAttention holds as tensors, built from the projections at each read
    @property
    def in_proj_weight(self) -> torch.Tensor | None:  # type: ignore[override]
        """The ``(3 embed_dim, embed_dim)`` stack of the query, key and value weights (None when
        ``kdim`` or ``vdim`` differs from ``embed_dim``, as in ``nn.MultiheadAttention``)."""
        if not self._qkv_same_embed_dim:
            return None
        return torch.cat([getattr(self, name).weight for name in PROJECTIONS])

    @property
    def in_proj_bias(self) -> torch.Tensor | None:  # type: ignore[override]
        """The query, key and value biases, stacked (None without biases)."""
        biases = [getattr(self, name).bias for name in PROJECTIONS]
        return None if any(b is None for b in biases) else torch.cat(biases)

    @property
    def q_proj_weight(self) -> torch.Tensor | None:  # type: ignore[override]
        return None if self._qkv_same_embed_dim else self.q_proj.weight

    @property
    def k_proj_weight(self) -> torch.Tensor | None:  # type: ignore[override]
        return None if self._qkv_same_embed_dim else self.k_proj.weight

    @property
    def v_proj_weight(self) -> torch.Tensor | None:  # type: ignore[override]
        return None if self._qkv_same_embed_dim else self.v_proj.weight

    def extra_repr(self) -> str:
        dims = "" if self._qkv_same_embed_dim else f", kdim={self.kdim}, vdim={self.vdim}"
        extras = "".join(f", {name}=True" for name in ("add_zero_attn",) if getattr(self, name))
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{dims}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}, bias_kv={self.bias_k is not None}{extras}")

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As ``nn.MultiheadAttention.forward`` (its slow path: the same function)."""
        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = (x.transpose(1, 0) for x in (query, key, value))
        biases = [getattr(self, name).bias for name in PROJECTIONS]
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, None,
            None if any(b is None for b in biases) else torch.cat(biases), self.bias_k, self.bias_v,
            self.add_zero_attn, self.dropout, self.out_proj.weight, self.out_proj.bias, training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            use_separate_proj_weight=True, q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight, average_attn_weights=average_attn_weights, is_causal=is_causal)
        if self.batch_first and batched:
            out = out.transpose(1, 0)
        return out, weights


def _check_format(format: Any, who: str, network: bool = True) -> None:
    """A format the projections can take, refused by name before anything is built."""
    from ..network import Network
    from .layers import FORMATS

    if network and isinstance(format, Network):
        return
    if not isinstance(format, str) or format not in (*FORMATS, "lowrank"):
        raise ValueError(f"{who}: unknown format {format!r}; use one of {(*FORMATS, 'lowrank')}")


def _projection(n_in: int, n_out: int, format: Any, rank: Any, **kwargs: Any) -> nn.Module:
    """A fresh projection in ``format`` at ``rank``, read as the converters read it: a float share
    of the dense ``n_in x n_out`` parameters, ``"full"`` the ranks at which any weight is exact
    (the constructor refused both, and ``"lowrank"``, which tensorize and from_attention take)."""
    from .convert import budget_rank, is_share, linear_ranks
    from .layers import LowRankLinear

    if format == "lowrank":
        if rank == "full":
            rank = min(n_in, n_out)
        elif is_share(rank):
            rank = budget_rank(lambda r: r * (n_in + n_out), n_in * n_out, rank, ceiling=min(n_in, n_out))
        return LowRankLinear(n_in, n_out, rank, **kwargs)
    if isinstance(format, str):
        rank = linear_ranks(n_in, n_out, format, rank, d=kwargs.get("d"))
    return TensorizedLinear(n_in, n_out, format, rank, **kwargs)


def _configure(module: nn.Module, embed_dim: int, num_heads: int, dropout: float, kdim: int | None,
               vdim: int | None, batch_first: bool, add_zero_attn: bool) -> None:
    """The plain attributes ``nn.MultiheadAttention.__init__`` sets, checked as it checks them."""
    module.embed_dim = positive_int(embed_dim, "embed_dim")
    module.num_heads = positive_int(num_heads, "num_heads")
    if module.embed_dim % module.num_heads:
        raise ValueError(f"embed_dim ({module.embed_dim}) must be divisible by num_heads ({module.num_heads})")
    module.kdim = positive_int(kdim, "kdim") if kdim is not None else module.embed_dim
    module.vdim = positive_int(vdim, "vdim") if vdim is not None else module.embed_dim
    module._qkv_same_embed_dim = module.kdim == module.embed_dim and module.vdim == module.embed_dim
    module.head_dim = module.embed_dim // module.num_heads
    module.dropout = float(dropout)
    module.batch_first = bool(batch_first)
    module.add_zero_attn = bool(add_zero_attn)
