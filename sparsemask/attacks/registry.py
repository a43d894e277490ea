"""The attack registry: every attack the CLI, the experiments and the tests can name.

An attack is one file: a subclass of :class:`~sparsemask.attacks.Attack` decorated with
``@register_attack("name")`` (and its import in ``attacks/__init__.py``, which exports it).
What it accepts is read from its signature — ``eps`` (a budget on the [0, 1] scale),
``norm``, ``steps``, ``seed``, ``progress`` — so the CLI and configs need no per-attack
lists (docs/architecture.md, "Adding an attack").
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from torch import nn

__all__ = ["AttackSpec", "register_attack", "unregister_attack", "attack_names", "get_attack", "make_attack", "attack_label"]


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its ``name`` (lower-case, as configs and the CLI spell it), its
    class, its ``label`` (the column name prefix, e.g. ``PGD`` -> ``PGD16``) and the
    keyword arguments its constructor accepts."""

    name: str
    cls: type
    label: str
    description: str

    @property
    def parameters(self) -> Mapping[str, inspect.Parameter]:
        """The constructor's keywords; where it forwards ``**kwargs`` to a base class (BIM to
        PGD), the base's keywords too."""
        merged: dict[str, inspect.Parameter] = {}
        for klass in self.cls.__mro__:
            if "__init__" not in vars(klass):
                continue
            params = inspect.signature(klass.__init__).parameters
            merged.update({k: p for k, p in params.items() if k != "self" and k not in merged
                           and p.kind is not p.VAR_KEYWORD})
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                break
        return merged

    def accepts(self, keyword: str) -> bool:
        return keyword in self.parameters


_REGISTRY: dict[str, AttackSpec] = {}


def register_attack(name: str, *, label: Optional[str] = None, description: Optional[str] = None,
                    replace: bool = False) -> Callable[[type], type]:
    """Class decorator: register an attack under ``name``.

    >>> @register_attack("pgd")
    ... class PGD(Attack): ...

    ``label`` defaults to the class name upper-cased; ``description`` to the first line of
    its docstring. ``replace``: allow re-registering ``name`` (else ValueError).
    """
    if not isinstance(name, str) or not name or name != name.lower() or not name.replace("_", "").isalnum():
        raise ValueError(f"register_attack: name must be a lower-case word, got {name!r}")

    def decorate(cls: type) -> type:
        if name in _REGISTRY and not replace and _REGISTRY[name].cls is not cls:
            raise ValueError(f"register_attack: attack {name!r} is already registered (pass replace=True)")
        doc = (inspect.getdoc(cls) or "").split("\n")[0]
        _REGISTRY[name] = AttackSpec(name, cls, label or cls.__name__.upper(), description or doc)
        return cls

    return decorate


def unregister_attack(name: str) -> None:
    """Remove attack ``name`` from the registry (its class stays importable)."""
    if name not in _REGISTRY:
        raise ValueError(f"unregister_attack: no attack {name!r}")
    del _REGISTRY[name]


def attack_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(_REGISTRY)


def get_attack(name: str) -> AttackSpec:
    """The :class:`AttackSpec` of ``name`` (case-insensitive); ValueError listing the names."""
    spec = _REGISTRY.get(str(name).lower())
    if spec is None:
        raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(_REGISTRY)}")
    return spec


def make_attack(model: nn.Module, params: Mapping[str, Any], *, seed: Optional[int] = None,
                progress: Optional[bool] = None):
    """An attack from a config entry ``params``.

    ``params``: ``name`` (a registered attack), ``eps255`` / ``step255`` on the seeds' 0-255
    scale (converted to ``eps`` / ``step_size``), ``eot`` (n draws: wrap in
    :class:`~sparsemask.attacks.EOT`), ``label`` (ignored here: see :func:`attack_label`)
    and any keyword of the attack's class (``steps``, ``norm``, ``kappa`` …). ``seed`` and
    ``progress`` are passed where the class accepts them and ``params`` does not set them.
    A keyword the class does not accept is a ValueError naming it.
    """
    from .eot import EOT

    params = dict(params)
    if "name" not in params:
        raise ValueError(f"make_attack: params needs a 'name' (one of {', '.join(_REGISTRY)}), got {params!r}")
    spec = get_attack(params.pop("name"))
    params.pop("label", None)
    eot = params.pop("eot", None)
    if "eps255" in params:
        params["eps"] = float(params.pop("eps255")) / 255.0
    if "step255" in params:
        params["step_size"] = float(params.pop("step255")) / 255.0
    for keyword, value in (("seed", seed), ("progress", progress)):
        if value is not None and spec.accepts(keyword):
            params.setdefault(keyword, value)
    unknown = [k for k in params if not spec.accepts(k)]
    if unknown:
        raise ValueError(f"make_attack: {spec.name} does not take {', '.join(map(repr, unknown))}; it takes "
                         f"{', '.join(k for k in spec.parameters if k != 'model')}")
    attack = spec.cls(model, **params)
    return EOT(attack, n=int(eot)) if eot else attack


def attack_label(params: Mapping[str, Any]) -> str:
    """``PGD16``, ``FGSM8``, ``CW40`` … (the seeds' column names) for a config entry."""
    if params.get("label"):
        return params["label"]
    name = str(params["name"])
    label = _REGISTRY[name.lower()].label if name.lower() in _REGISTRY else name.upper()
    if "eps255" in params:
        return f"{label}{params['eps255']:g}"
    if "kappa" in params:
        return f"{label}{params['kappa']:g}"
    return label
