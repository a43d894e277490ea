"""Shared pieces of the attacks: argument checks, ε handling, norms, projections, gradients.

Conventions every attack in this package follows (and the tests check):

* inputs ``x`` are float tensors [N, ...] with values in [0, 1] (normalisation lives inside
  the model); labels ``y`` are int64 [N]; optional ``targets`` int64 [N] make the attack
  targeted;
* the model's train/eval mode and its randomness are left exactly as the caller set them
  (no ``model.eval()``: that would silently switch off randomized defenses);
* the caller's tensors are never modified, and no ``.grad`` is left on the model's parameters;
* random draws come from a ``torch.Generator`` built from ``seed=`` (or passed as
  ``generator=``); they are drawn on the CPU and moved, so a seed gives the same numbers on
  every device.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Optional, Union

import torch
from torch import nn

from ..seeding import check_seed  # noqa: F401  (used here and by the attacks through this module)

Eps = Union[float, int, torch.Tensor]

NORMS = ("inf", "2", "1")


def eps255(value: Union[float, torch.Tensor]) -> Union[float, torch.Tensor]:
    """Convert a budget on the seeds' 0-255 pixel scale to the [0, 1] scale the attacks use.

    The seed papers state ε and step sizes in 0-255 units (``PGD16`` = ε 16, step 1). The
    attacks here take inputs in [0, 1], so ``PGD(model, eps=eps255(16), step_size=eps255(1))``
    is the seeds' PGD16. Only meaningful for L∞ budgets (an L2/L1 budget scales the same way
    per pixel, but the seeds state those on the [0, 1] scale already).
    """
    return value / 255.0


def norm_name(norm) -> str:
    """Canonical norm name: ``"inf"``, ``"2"`` or ``"1"`` (accepts ``inf``, ``2``, ``"l2"``, …)."""
    if isinstance(norm, bool):
        raise ValueError(f"norm must be one of 'inf', '2', '1', got {norm!r}")
    if isinstance(norm, (int, float)):
        if math.isinf(norm):
            return "inf"
        if norm in (1, 2):
            return str(int(norm))
    elif isinstance(norm, str):
        key = norm.lower().removeprefix("l").removeprefix("_")
        if key in ("inf", "infinity", "∞"):
            return "inf"
        if key in ("1", "2"):
            return key
    raise ValueError(f"norm must be one of 'inf', '2', '1', got {norm!r}")


def check_norm(norm, allowed=NORMS) -> str:
    name = norm_name(norm)
    if name not in allowed:
        raise ValueError(f"norm must be one of {allowed} for this attack, got {norm!r}")
    return name


def check_nonneg(name: str, value, *, integer: bool = False, positive: bool = False):
    """Raise ValueError unless ``value`` is a (positive) number; return it."""
    if integer:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")
    return value


def check_l1_sparsity(l1_sparsity: Optional[float]) -> Optional[float]:
    """The fraction of coordinates an L1 step moves (``None``: the default), in (0, 1]."""
    if l1_sparsity is not None and not 0 < l1_sparsity <= 1:
        raise ValueError(f"l1_sparsity must be in (0, 1] or None, got {l1_sparsity}")
    return l1_sparsity


def check_eps(eps: Eps, name: str = "eps"):
    """Validate a scalar or per-sample [N] budget; returns it (tensor or float)."""
    if isinstance(eps, torch.Tensor):
        if eps.dim() > 1:
            raise ValueError(f"{name} must be a scalar or a 1-D per-sample tensor [N], got shape "
                             f"{tuple(eps.shape)}")
        if not torch.is_floating_point(eps) and eps.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be a real tensor, got {eps.dtype}")
        if (eps < 0).any() or not torch.isfinite(eps).all():
            raise ValueError(f"{name} must be finite and >= 0, got {eps}")
        return eps
    return check_nonneg(name, eps)


def check_eps_scale(eps: Eps, norm: str, name: str = "eps") -> None:
    """An L-inf budget above 1 exceeds the whole [0, 1] pixel range: it is the 0-255 scale
    by mistake (``PGD(m, eps=8)``), which would otherwise run as an unbounded attack."""
    largest = float(eps.max()) if isinstance(eps, torch.Tensor) and eps.numel() else float(eps) \
        if not isinstance(eps, torch.Tensor) else 0.0
    if norm == "inf" and largest > 1:
        raise ValueError(f"{name}={largest:g} is an L-inf budget larger than the [0, 1] pixel range; on the seeds' "
                         f"0-255 scale write {name}=eps255({largest:g}) (= {largest / 255:.4g})")


def check_inputs(x: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor] = None):
    """Check ``x`` [N, ...] float in [0, 1], ``y`` and ``targets`` int [N] on x's device."""
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise TypeError(f"x must be a floating-point tensor [N, ...], got "
                        f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must be batched [N, ...] with dim >= 2, got shape {tuple(x.shape)}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        # NaN fails both comparisons below, so it would pass the [0, 1] check.
        raise ValueError(f"x must be finite with values in [0, 1], got {int((~torch.isfinite(x)).sum())} "
                         f"NaN/Inf values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x must have values in [0, 1] (normalise inside the model), got range "
                         f"[{x.min().item():.4g}, {x.max().item():.4g}]")
    for name, lab in (("y", y), ("targets", targets)):
        if lab is None:
            continue
        if not isinstance(lab, torch.Tensor) or lab.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be an int64 tensor [N] of class indices, got "
                            f"{lab.dtype if isinstance(lab, torch.Tensor) else type(lab).__name__}")
        if lab.shape != (x.shape[0],):
            raise ValueError(f"{name} must have shape [N] = ({x.shape[0]},), got {tuple(lab.shape)}")
        if lab.device != x.device:
            raise ValueError(f"{name} is on {lab.device} but x is on {x.device}")
        if lab.numel() and int(lab.min()) < 0:
            raise ValueError(f"{name} must be class indices in range 0..K-1, got {int(lab.min())}")


def check_label_range(num_classes: int, y: torch.Tensor, targets: Optional[torch.Tensor] = None) -> None:
    """Labels must index the model's K = ``num_classes`` logits (DeepFool and Boundary
    would otherwise return the input unchanged, and gather/cross_entropy fail obscurely)."""
    for name, lab in (("y", y), ("targets", targets)):
        if lab is not None and lab.numel() and int(lab.max()) >= num_classes:
            raise ValueError(f"{name} must be class indices in range 0..{num_classes - 1} (the model has "
                             f"{num_classes} logits), got {int(lab.max())}")


def per_sample(value: Eps, x: torch.Tensor) -> torch.Tensor:
    """Scalar or [N] budget -> tensor [N, 1, ..., 1] broadcastable against ``x``."""
    n = x.shape[0]
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(n)
    elif t.shape != (n,):
        raise ValueError(f"per-sample budget must have shape [N] = ({n},), got {tuple(t.shape)}")
    return t.reshape(n, *([1] * (x.dim() - 1)))


def make_generator(seed: Optional[int], generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
    """A CPU generator from ``seed`` (or the given one); None means torch's global RNG.

    Attacks call this at every call, so an attack built with ``seed=`` gives the same result
    each time it is called; a ``generator=`` passed in advances from call to call."""
    check_seed(seed, generator)
    if generator is not None:
        return generator
    if seed is not None:
        return torch.Generator().manual_seed(int(seed))
    return None


def randn_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device, moved to x's."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def rand_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Uniform [0, 1) noise shaped like ``x`` (same device rule as :func:`randn_like`)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def flat_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of v [N, ...] -> [N, 1, ..., 1]."""
    flat = v.flatten(1)
    if norm == "inf":
        r = flat.abs().amax(1)
    elif norm == "2":
        r = flat.norm(p=2, dim=1)
    else:
        r = flat.abs().sum(1)
    return r.reshape(v.shape[0], *([1] * (v.dim() - 1)))


def project_l1_ball(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of delta [N, ...] onto the L1 ball of radius eps [N,1,..].

    Sort-based algorithm of Duchi et al. (2008); rows already inside are returned unchanged.
    """
    n = delta.shape[0]
    flat = delta.flatten(1)
    radius = eps.reshape(n, 1)
    abs_v = flat.abs()
    inside = abs_v.sum(1, keepdim=True) <= radius
    mu, _ = abs_v.sort(dim=1, descending=True)
    cums = mu.cumsum(1)
    ar = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    cond = mu - (cums - radius) / ar > 0
    rho = cond.to(flat.dtype).mul(ar).argmax(1, keepdim=True)  # last index where cond holds
    theta = ((cums.gather(1, rho) - radius) / (rho + 1).to(flat.dtype)).clamp_min(0)
    proj = flat.sign() * (abs_v - theta).clamp_min(0)
    return torch.where(inside, flat, proj).view_as(delta)


def project(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project perturbations delta [N, ...] onto the ``norm`` ball of radius eps [N, 1, ...]."""
    if norm == "inf":
        return torch.maximum(torch.minimum(delta, eps), -eps)
    if norm == "2":
        scale = (eps / flat_norm(delta, "2").clamp_min(1e-12)).clamp(max=1.0)
        return delta * scale
    return project_l1_ball(delta, eps)


def steepest_direction(grad: torch.Tensor, norm: str, l1_sparsity: Optional[float] = None) -> torch.Tensor:
    """Unit-norm direction of steepest ascent for a gradient [N, ...] under ``norm``.

    * ``inf``: sign(grad) (the FGSM step);
    * ``2``: grad / ||grad||_2;
    * ``1``: grad / ||grad||_1 (the L1 fast gradient method of foolbox/ART that seed 002 used),
      or, with ``l1_sparsity=q``, sign(grad) on the top-q fraction of coordinates by |grad|,
      scaled to L1 norm 1 (the sparse L1 step of Tramèr & Boneh, which makes L1 PGD strong).
    Rows with a zero gradient get a zero direction.
    """
    if norm == "inf":
        return grad.sign()
    if norm == "2":
        return grad / flat_norm(grad, "2").clamp_min(1e-12)
    if l1_sparsity is None:
        return grad / flat_norm(grad, "1").clamp_min(1e-12)
    flat = grad.flatten(1)
    k = max(1, int(round(l1_sparsity * flat.shape[1])))
    thresh = flat.abs().topk(k, dim=1).values[:, -1:]
    chosen = (flat.abs() >= thresh) & (flat != 0)
    d = flat.sign() * chosen
    return (d / d.abs().sum(1, keepdim=True).clamp_min(1)).view_as(grad)


def box_free(grad: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Zero the gradient where the [0, 1] box stops the ascent step (pixel at 0 pushed down or
    at 1 pushed up), so normalised L2 / L1 steps spend their budget on pixels that can move."""
    blocked = ((x_adv <= 0) & (grad < 0)) | ((x_adv >= 1) & (grad > 0))
    return grad.masked_fill(blocked, 0)


def random_in_ball(x: torch.Tensor, eps: torch.Tensor, norm: str,
                   generator: Optional[torch.Generator]) -> torch.Tensor:
    """A random perturbation [N, ...] inside the ``norm`` ball of radius eps (for PGD's start).

    L∞: uniform in the cube. L2 / L1: a random direction (Gaussian / Laplace) scaled to a
    radius eps * u, u ~ U(0, 1).
    """
    if norm == "inf":
        return (2 * rand_like(x, generator) - 1) * eps
    if norm == "2":
        direction = randn_like(x, generator)
    else:
        u = rand_like(x, generator).clamp(1e-7, 1 - 1e-7)
        direction = -torch.log(u) * torch.sign(rand_like(x, generator) - 0.5)  # Laplace
    direction = direction / flat_norm(direction, norm).clamp_min(1e-12)
    radius = rand_like(x[:, :1].flatten(1)[:, :1], generator).view(-1, *([1] * (x.dim() - 1)))
    return direction * eps * radius


def margin_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logit[label] - max_{j != label} logit[j], per example [N]."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, labels[:, None], float("-inf"))
    return true - other.amax(1)


def adversarial_loss(logits: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor],
                     loss: str = "ce") -> torch.Tensor:
    """Per-example loss [N] the attack *ascends*.

    ``ce``: cross-entropy of the true label (untargeted) or minus cross-entropy of the target.
    ``margin``: the C&W margin, -(logit_y - max other) or (logit_t - max other).
    """
    if loss == "ce":
        if targets is None:
            return nn.functional.cross_entropy(logits, y, reduction="none")
        return -nn.functional.cross_entropy(logits, targets, reduction="none")
    if loss == "margin":
        if targets is None:
            return -margin_from_logits(logits, y)
        return margin_from_logits(logits, targets)
    raise ValueError(f"loss must be 'ce' or 'margin', got {loss!r}")


LOSSES = ("ce", "margin")


def check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be 'ce' or 'margin', got {loss!r}")
    return loss


def is_adversarial(logits: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor]) -> torch.Tensor:
    """Bool [N]: prediction differs from y (untargeted) or equals the target (targeted)."""
    pred = logits.argmax(1)
    return pred != y if targets is None else pred == targets


class Attack:
    """Base class: holds the model, the EOT sample count and the progress flag.

    Subclasses implement :meth:`_run` (inputs already validated and cloned). Calling an attack
    ``attack(x, y, targets=None) -> x_adv`` returns a new tensor shaped like ``x`` in [0, 1].
    """

    #: whether :func:`~sparsemask.attacks.EOT` may wrap this attack (needs loss gradients)
    gradient_based = True

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], *, progress: bool = False):
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module), got {type(model).__name__}")
        self.model = model
        self.progress = bool(progress)
        self.eot_n = 1

    def __call__(self, x: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_inputs(x, y, targets)
        x = x.detach().clone()
        y = y.detach().clone().long()
        targets = None if targets is None else targets.detach().clone().long()
        if x.shape[0] == 0:
            return x
        self._unchecked_labels = (y, targets)  # checked against K at the first forward pass
        try:
            with torch.enable_grad():
                out = self._run(x, y, targets)
        finally:
            self._unchecked_labels = None
        return out.detach()

    def _run(self, x, y, targets):  # pragma: no cover - abstract
        raise NotImplementedError

    def with_eot(self, n: int) -> "Attack":
        """A copy of this attack that averages every gradient over ``n`` forward passes."""
        if not self.gradient_based:
            raise TypeError(f"{type(self).__name__} does not use gradients; EOT does not apply")
        check_nonneg("n", n, integer=True, positive=True)
        other = copy.copy(self)
        other.eot_n = n
        return other

    # -- gradients ----------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass; the first of a call also checks the labels against K."""
        out = self.model(x)
        labels = getattr(self, "_unchecked_labels", None)
        if labels is not None and isinstance(out, torch.Tensor) and out.dim() == 2:
            self._unchecked_labels = None
            check_label_range(out.shape[1], *labels)
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model logits [N, K]; with EOT, the mean over ``eot_n`` forward passes."""
        if self.eot_n == 1:
            return self._forward(x)
        return torch.stack([self._forward(x) for _ in range(self.eot_n)]).mean(0)

    def loss_grad(self, x_adv: torch.Tensor, per_example_loss: Callable[[torch.Tensor], torch.Tensor]):
        """(loss [N], d loss / d x_adv [N, ...]), averaged over ``eot_n`` forward passes.

        Gradients are taken w.r.t. the input only (torch.autograd.grad), so nothing accumulates
        in the parameters' ``.grad``.
        """
        x_adv = x_adv.detach().requires_grad_(True)
        total_loss = 0.0
        grad = torch.zeros_like(x_adv)
        for _ in range(self.eot_n):
            loss = per_example_loss(self._forward(x_adv))
            (g,) = torch.autograd.grad(loss.sum(), x_adv)
            grad += g
            total_loss = total_loss + loss.detach()
        return total_loss / self.eot_n, grad / self.eot_n

    def _pbar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        eot = f", eot_n={self.eot_n}" if self.eot_n != 1 else ""
        return f"{type(self).__name__}({self.extra_repr()}{eot})"
