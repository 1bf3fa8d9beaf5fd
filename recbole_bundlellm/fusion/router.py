"""Router modules: an input representation in, one weight per expert (and LoRA layer) out.

The built-in router plugins (``input_aware``, ``uniform``, ``fixed``) build these modules; a
third party's router may subclass :class:`RouterModule` or return any module of the same shape.
A module with ``uses_session_features`` true also reads each input's
:class:`~recbole_bundlellm.fusion.features.SessionFeatures` (``forward(inputs, features)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recbole_bundlellm.fusion.features import SessionFeatures
from recbole_bundlellm.settings import SettingsError


def normalise(scores: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """Weights from scores over the last dimension: ``softmax(scores / temperature)``; with
    ``top_k`` only the k largest scores take part (renormalised among themselves), the others
    are exactly 0. Masking before the softmax (not zeroing after it) keeps the sum exactly 1 and
    the gradient flowing to the kept experts only."""
    scores = scores / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, scores.topk(top_k, dim=-1).indices, True)
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1)


def check_top_k(top_k: int | None, experts: Sequence[str], router: str) -> None:
    """A ``top_k`` above the number of experts is a settings error (it would silently mean all)."""
    if top_k is not None and top_k > len(experts):
        raise SettingsError(f"'{router}.top_k' is {top_k} but there are only {len(experts)} experts "
                            f"({', '.join(experts)})")


class RouterModule(nn.Module):
    """Base of router modules: ``experts`` in weight order, ``input_size`` and ``n_layers``
    (1: one weight vector per input, ``[batch, n_experts]``; more: ``[batch, n_layers, n_experts]``).

    :meth:`forward` takes ``[batch, input_size]`` in any float dtype and returns float32 weights
    (the mixture casts them to each layer's dtype). A module that also reads session features
    sets :attr:`uses_session_features` (class or instance) and takes ``forward(inputs, features)``
    with a :class:`~recbole_bundlellm.fusion.features.SessionFeatures` of the batch; the model
    then gives them for every batch. A module without it is called ``forward(inputs)``.
    """

    #: True: :meth:`forward` takes ``(inputs, features)``, the batch's session features too.
    uses_session_features: bool = False

    def __init__(self, experts: Sequence[str], input_size: int, n_layers: int = 1) -> None:
        super().__init__()
        if not experts:
            raise SettingsError("a router needs at least one expert")
        if len(set(experts)) != len(experts):
            raise SettingsError(f"expert names repeat: {list(experts)}")
        self.experts = tuple(experts)
        self.input_size = input_size
        self.n_layers = n_layers

    def _shape(self, flat: torch.Tensor) -> torch.Tensor:
        """``[batch, n_layers * n_experts]`` as this router's output shape."""
        if self.n_layers == 1:
            return flat
        return flat.view(flat.shape[0], self.n_layers, len(self.experts))


class MlpRouter(RouterModule):
    """The input-aware router: LayerNorm, a small MLP, softmax with temperature and top-k.

    The LayerNorm puts hidden states of any model (their scale differs a lot between models) on
    one scale. The output layer starts at zero, so an untrained router is the uniform mixture and
    training moves away from it.

    With ``features`` (session feature names) the module reads the batch's
    :class:`~recbole_bundlellm.fusion.features.SessionFeatures` too: their
    :meth:`~recbole_bundlellm.fusion.features.SessionFeatures.log_scaled` values (``log1p`` of the
    counts, the knowledge kinds' 0/1 as they are) are concatenated to the normalised
    representation before the MLP. They stay out of the LayerNorm, which would mix them with the
    hidden state's scale. The parameter names stay those of the module without features (``net.*``);
    only the first linear layer is wider.
    """

    def __init__(self, experts: Sequence[str], input_size: int, n_layers: int = 1, *, hidden_size: int = 64,
                 dropout: float = 0.0, temperature: float = 1.0, top_k: int | None = None,
                 features: Sequence[str] = ()) -> None:
        super().__init__(experts, input_size, n_layers)
        self.temperature, self.top_k = temperature, top_k
        self.feature_names = tuple(features)
        self.uses_session_features = bool(self.feature_names)
        width = n_layers * len(self.experts)
        read = input_size + len(self.feature_names)
        layers: list[nn.Module] = [nn.LayerNorm(input_size)]
        if hidden_size > 0:
            layers += [nn.Linear(read, hidden_size), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden_size if hidden_size > 0 else read, width))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor, features: SessionFeatures | None = None) -> torch.Tensor:
        dtype = self.net[0].weight.dtype
        if not self.uses_session_features:
            scores = self.net(inputs.to(dtype))
        else:
            if features is None or features.names != self.feature_names:
                got = "none" if features is None else list(features.names)
                raise SettingsError(f"this router reads the session features {list(self.feature_names)}, "
                                    f"got {got}; it was trained for another run's features")
            normed = self.net[0](inputs.to(dtype))
            extra = features.log_scaled().to(normed.device, dtype)
            scores = self.net[1:](torch.cat([normed, extra], dim=-1))
        return normalise(self._shape(scores).float(), self.temperature, self.top_k)


class StaticRouter(RouterModule):
    """The same weights for every input (uniform, or fixed by settings); nothing to train."""

    def __init__(self, experts: Sequence[str], input_size: int, weights: Sequence[float], n_layers: int = 1) -> None:
        super().__init__(experts, input_size, n_layers)
        values = torch.tensor([float(w) for w in weights], dtype=torch.float32)
        if values.shape != (len(self.experts),) or bool((values < 0).any()) or not float(values.sum()) > 0:
            raise SettingsError(f"static router weights must be one number >= 0 per expert "
                                f"({', '.join(self.experts)}), not all 0; got {list(weights)}")
        self.register_buffer("weights", values / values.sum())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.weights.expand(inputs.shape[0], -1)
        return out if self.n_layers == 1 else out[:, None, :].expand(-1, self.n_layers, -1)


__all__ = ["MlpRouter", "RouterModule", "StaticRouter", "check_top_k", "normalise"]
