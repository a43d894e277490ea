"""The claims of seeds 000-004, in one place, each with the rule that judges it from our results.

A :class:`Claim` quotes one claim of a seed paper (verbatim, short), names where the seed
shows it (Table/Figure N), gives the seed's own number with its setting, and names the
experiment of ours that tests it. Its ``ours(results)`` reads that experiment's committed
``results.json`` (``numbers`` / ``models`` / ``config``) and returns ``(summary text, measured
values)``; its ``verdict(measured)`` turns the measured values into one of
:data:`VERDICTS` (or, for the adaptive-attack rows the seeds never ran, one of
:data:`ADAPTIVE_VERDICTS`) and a reason, by direction and rough size only — our scale
(Fashion-MNIST, a quarter-width ResNet-18, minutes of CPU training) cannot match the seeds'
absolute numbers, so no rule compares them.

Our numbers are never typed in here: every value in a verdict is read from a results file.
A results file without a key a claim reads gives verdict ``"not run"`` with the key named
(:class:`Missing`), never an exception. Claims that no experiment measures have
``experiment=None`` and say where they are measured instead (``elsewhere``), if anywhere.

A claim that needs two experiments names both in ``experiment`` (a tuple); its ``ours`` then
receives ``{experiment name: results}``.

``docs/reproduction.md`` is generated from this catalogue by
:mod:`sparsemask.experiments.reproduction`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

__all__ = ["Claim", "Outcome", "Missing", "CLAIMS", "VERDICTS", "ADAPTIVE_VERDICTS", "evaluate", "claims_for",
           "experiments_of"]

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_RUN, NOT_TESTED = (
    "reproduced", "partly", "not reproduced", "not run", "not tested here")
HOLDS, PARTLY_HOLDS, VANISHES = ("robustness holds under adaptive attack",
                                 "robustness partly holds under adaptive attack",
                                 "robustness vanishes under adaptive attack")
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_RUN, NOT_TESTED)
ADAPTIVE_VERDICTS = (HOLDS, PARTLY_HOLDS, VANISHES)

Measured = dict
OursFn = Callable[[Mapping[str, Any]], "tuple[str, Measured]"]
VerdictFn = Callable[[Measured], "tuple[str, str]"]


class Missing(LookupError):
    """A results file lacks something a claim reads; the message names it (``numbers['S(M)']``)."""


@dataclass(frozen=True)
class Claim:
    """One claim of a seed paper and how our results judge it.

    seed: "000" … "004"; id: unique, e.g. ``001-T2-headline``; quote: the claim, verbatim
    from the seed's text; where: ``Table 2`` / ``Figure 5`` / ``Section 3.1``; seed_number: the
    seed's value(s) with their setting; experiment: our experiment name (a tuple for several,
    None when no experiment measures the claim); keys: what ``ours`` reads, as
    ``numbers[...]`` paths (documentation, also shown in docs/reproduction.md); rule: the
    verdict rule in words; adaptive: a row for an attack the seed did not run (verdict wording
    "robustness holds / vanishes under adaptive attack"); elsewhere: where a claim with no
    experiment is measured instead (or why it is not).
    """

    seed: str
    id: str
    quote: str
    where: str
    seed_number: str
    experiment: Union[str, tuple, None]
    keys: tuple = ()
    rule: str = ""
    ours: Optional[OursFn] = None
    verdict: Optional[VerdictFn] = None
    adaptive: bool = False
    elsewhere: str = ""


@dataclass
class Outcome:
    """A claim evaluated on our results: verdict, reason, summary text, measured values."""

    claim: Claim
    verdict: str
    reason: str
    summary: str = ""
    measured: dict = field(default_factory=dict)


def experiments_of(claim: Claim) -> tuple:
    """The experiment names a claim reads (empty for a claim no experiment measures)."""
    if claim.experiment is None:
        return ()
    return (claim.experiment,) if isinstance(claim.experiment, str) else tuple(claim.experiment)


def evaluate(claim: Claim, results: Mapping[str, Optional[Mapping[str, Any]]]) -> Outcome:
    """Judge ``claim`` on ``results`` (experiment name -> results.json dict, or None/absent when
    that experiment has no results). Never raises for missing or malformed results: those give
    verdict ``"not run"`` with the reason."""
    names = experiments_of(claim)
    if not names:
        return Outcome(claim, NOT_TESTED, claim.elsewhere or "no experiment of this project measures it")
    absent = [n for n in names if not results.get(n)]
    if absent:
        return Outcome(claim, NOT_RUN, "no results for " + ", ".join(f"`{n}`" for n in absent))
    arg = results[names[0]] if len(names) == 1 else {n: results[n] for n in names}
    try:
        summary, measured = claim.ours(arg)
    except Missing as e:
        return Outcome(claim, NOT_RUN, f"results lack {e.args[0]}")
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, AttributeError) as e:
        return Outcome(claim, NOT_RUN, f"results not in the expected shape ({type(e).__name__}: {e})")
    try:
        verdict, reason = claim.verdict(measured)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
        return Outcome(claim, NOT_RUN, f"measured values incomplete ({type(e).__name__}: {e})", summary, measured)
    return Outcome(claim, verdict, reason, summary, measured)


def claims_for(seed: str) -> list[Claim]:
    """The claims of one seed, in catalogue order."""
    return [c for c in CLAIMS if c.seed == seed]


# --------------------------------------------------------------------------- reading results

def _path(keys: Sequence[Any]) -> str:
    return "numbers" + "".join(f"[{k!r}]" for k in keys)


def need(results: Mapping[str, Any], *keys: Any) -> Any:
    """``results["numbers"][k0][k1]…``, or :class:`Missing` naming the first absent key."""
    obj = results.get("numbers") if isinstance(results, Mapping) else None
    if obj is None:
        raise Missing("numbers")
    for i, k in enumerate(keys):
        if not isinstance(obj, Mapping) or k not in obj:
            raise Missing(_path(keys[:i + 1]))
        obj = obj[k]
    if obj is None:  # results.json writes NaN as null
        raise Missing(f"{_path(keys)} (null: not measured)")
    return obj


def _num(x: Any) -> float:
    v = float(x)
    if math.isnan(v):
        raise ValueError("NaN")
    return v


_DEFECTIVE = re.compile(r"(^|/)\d*\.?\d+-(Bottom|Top)")
_BOTTOM = re.compile(r"(?:^|/)(\d*\.?\d+)-Bottom$")
_ADAPTIVE_LABEL = re.compile(r"restart|eot|adaptive", re.I)
GRAYBOX_COLUMN = "gray-box (same masks, other seed)"


def _label(key: str) -> str:
    return key.split("/", 1)[-1]


def standard_key(table: Mapping[str, Any]) -> str:
    """The standard model's row: the first row that is not a defective variant (the
    experiments list the standard model first; baselines such as Madry come after)."""
    for k in table:
        if not _DEFECTIVE.search(k):
            return k
    raise Missing("a standard-model row (every row is defective)")


def bottom_keys(table: Mapping[str, Any]) -> dict[float, str]:
    """keep -> row key of each plain ``p-Bottom`` row (no DC/SM/xn/EN/mixed suffix)."""
    out = {}
    for k in table:
        m = _BOTTOM.search(k)
        if m:
            out[float(m.group(1))] = k
    return out


def row_with(table: Mapping[str, Any], *needles: str) -> Optional[str]:
    """The first row whose label contains any of ``needles`` (case-insensitive), else None."""
    for k in table:
        if any(n.lower() in _label(k).lower() for n in needles):
            return k
    return None


def attack_starting(sdr: Mapping[str, Any], prefix: str, what: str = "success_defense_rate") -> str:
    """The first non-adaptive attack label starting with ``prefix`` (``PGD``, ``FGSM``, ``CW``)."""
    for a in sdr:
        if a.upper().startswith(prefix) and not _ADAPTIVE_LABEL.search(a):
            return a
    raise Missing(f"numbers[{what!r}][<a {prefix} attack>]")


def pick_keep(keeps: Sequence[float], want: float = 0.1) -> float:
    """``want`` if present, else the smallest keep (the most defective model)."""
    if not keeps:
        raise Missing("a p-Bottom row")
    return want if want in keeps else min(keeps)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pts(x: float) -> str:
    return f"{100 * x:+.1f} pts"


def _gap_verdict(gap: float, big: float, what: str) -> tuple[str, str]:
    """reproduced if ``gap`` ≥ ``big``, partly if > 0, not reproduced otherwise."""
    if gap >= big:
        return REPRODUCED, f"{what} {pts(gap)} (≥ {100 * big:.0f} pts)"
    if gap > 0:
        return PARTLY, f"{what} {pts(gap)}: same direction, smaller than {100 * big:.0f} pts"
    return NOT_REPRODUCED, f"{what} {pts(gap)}: opposite direction or none"


def _adaptive_verdict(margin: float, holds: float, vanishes: float, what: str) -> tuple[str, str]:
    """holds if ``margin`` ≥ ``holds``, vanishes if ≤ ``vanishes``, partly between."""
    if margin >= holds:
        return HOLDS, f"{what} {pts(margin)} (≥ {100 * holds:.0f} pts)"
    if margin <= vanishes:
        return VANISHES, f"{what} {pts(margin)} (≤ {100 * vanishes:.0f} pts)"
    return PARTLY_HOLDS, f"{what} {pts(margin)}: between {100 * vanishes:.0f} and {100 * holds:.0f} pts"


# --------------------------------------------------------------------------- 001-transfer

def _transfer(results) -> tuple[dict, str, str, str, float, str]:
    """(PGD table, PGD label, standard key, defective key, keep, first (same-arch) source)."""
    sdr = need(results, "success_defense_rate")
    a = attack_starting(sdr, "PGD")
    table = need(results, "success_defense_rate", a)
    std = standard_key(table)
    keeps = bottom_keys(table)
    keep = pick_keep(sorted(keeps))
    source = next(iter(need(results, "success_defense_rate", a, std)))
    return table, a, std, keeps[keep], keep, source


def _single_sources(row: Mapping[str, Any]) -> list[str]:
    return [s for s in row if not s.startswith("Ensemble") and s != GRAYBOX_COLUMN]


def ours_transfer_headline(results):
    sdr = need(results, "success_defense_rate")
    _, _, std, dkey, keep, source = _transfer(results)
    m, parts = {"keep": keep, "source": source}, []
    for prefix in ("FGSM", "PGD"):
        try:
            a = attack_starting(sdr, prefix)
        except Missing:
            continue
        s, d = _num(need(results, "success_defense_rate", a, std, source)), _num(
            need(results, "success_defense_rate", a, dkey, source))
        m[prefix] = {"attack": a, "standard": s, "defective": d}
        parts.append(f"{a}: {_label(dkey)} {pct(d)} vs {_label(std)} {pct(s)}")
    return f"transfer from {source}: " + "; ".join(parts), m


def verdict_transfer_headline(m):
    pgd = m["PGD"]["defective"] - m["PGD"]["standard"]
    fgsm = m["FGSM"]["defective"] - m["FGSM"]["standard"] if "FGSM" in m else None
    if pgd >= 0.10 and (fgsm is None or fgsm > 0):
        return REPRODUCED, f"defective − standard: PGD {pts(pgd)}" + (f", FGSM {pts(fgsm)}" if fgsm is not None else "")
    if pgd > 0 or (fgsm is not None and fgsm > 0):
        return PARTLY, (f"same direction but smaller or on one attack only: PGD {pts(pgd)}"
                        + (f", FGSM {pts(fgsm)}" if fgsm is not None else "") + " (reproduced needs PGD ≥ +10 pts)")
    return NOT_REPRODUCED, f"defective not above standard: PGD {pts(pgd)}" + (
        f", FGSM {pts(fgsm)}" if fgsm is not None else "")


def ours_transfer_clean(results):
    clean = need(results, "clean_accuracy")
    std = standard_key(clean)
    keeps = bottom_keys(clean)
    keep = pick_keep(sorted(keeps))
    s, d = _num(clean[std]), _num(clean[keeps[keep]])
    return f"clean accuracy {_label(keeps[keep])} {pct(d)} vs {_label(std)} {pct(s)}", {
        "standard": s, "defective": d, "keep": keep}


def verdict_clean(m):
    drop = m["standard"] - m["defective"]
    if drop <= 0.05:
        return REPRODUCED, f"clean accuracy drop {100 * drop:.1f} pts (≤ 5 pts)"
    if drop <= 0.10:
        return PARTLY, f"clean accuracy drop {100 * drop:.1f} pts (5-10 pts)"
    return NOT_REPRODUCED, f"clean accuracy drop {100 * drop:.1f} pts (> 10 pts)"


def ours_transfer_dropout(results):
    table, a, std, _, _, source = _transfer(results)
    s = _num(table[std][source])
    m, parts = {"standard": s, "attack": a, "baselines": {}}, []
    for needle in ("SpatialDropout", "DropBlock"):
        k = row_with(table, needle)
        if k is not None:
            v = _num(table[k][source])
            m["baselines"][_label(k)] = v
            parts.append(f"{_label(k)} {pct(v)}")
    if not m["baselines"]:
        raise Missing(f"numbers['success_defense_rate'][{a!r}][<a SpatialDropout or DropBlock row>]")
    return f"{a} from {source}: " + ", ".join(parts) + f" vs {_label(std)} {pct(s)}", m


def verdict_transfer_dropout(m):
    gaps = {k: v - m["standard"] for k, v in m["baselines"].items()}
    worst = max(gaps.values())
    text = ", ".join(f"{k} {pts(g)}" for k, g in gaps.items())
    if worst <= 0.05:
        return REPRODUCED, f"no baseline improves on standard by more than 5 pts ({text})"
    if worst <= 0.10:
        return PARTLY, f"a baseline improves by 5-10 pts ({text})"
    return NOT_REPRODUCED, f"a dropout baseline does improve robustness by > 10 pts ({text})"


def ours_transfer_madry(results):
    table, a, _, dkey, keep, source = _transfer(results)
    mk = row_with(table, "Madry")
    if mk is None:
        raise Missing(f"numbers['success_defense_rate'][{a!r}][<a Madry row>]")
    clean = need(results, "clean_accuracy")
    m = {"defective": _num(table[dkey][source]), "madry": _num(table[mk][source]),
         "defective_clean": _num(clean[dkey]), "madry_clean": _num(need(results, "clean_accuracy", mk))}
    return (f"{a} from {source}: {_label(dkey)} {pct(m['defective'])} (clean {pct(m['defective_clean'])}) vs "
            f"{_label(mk)} {pct(m['madry'])} (clean {pct(m['madry_clean'])})"), m


def verdict_transfer_madry(m):
    rob = m["defective"] - m["madry"]
    gen = m["defective_clean"] - m["madry_clean"]
    text = f"defense rate {pts(rob)}, clean accuracy {pts(gen)} vs Madry"
    ok = (rob >= -0.02, gen >= -0.02)
    if all(ok):
        return REPRODUCED, f"defective matches or beats Madry on both ({text}; tolerance 2 pts)"
    if any(ok):
        return PARTLY, f"on one of the two only ({text})"
    return NOT_REPRODUCED, f"Madry better on both ({text})"


def _cells(results, ensemble: bool):
    table, a, std, _, _, _ = _transfer(results)
    keeps = bottom_keys(table)
    cells = []
    for s in table[std]:
        if (s.startswith("Ensemble") != ensemble) or s == GRAYBOX_COLUMN:
            continue
        for keep, k in sorted(keeps.items()):
            if table[k].get(s) is not None and table[std].get(s) is not None:
                cells.append((keep, s, _num(table[k][s]) - _num(table[std][s])))
    if not cells:
        raise Missing(f"numbers['success_defense_rate'][{a!r}][*][<an {'ensemble' if ensemble else 'single'} source>]")
    return a, cells


def _ours_cells(ensemble: bool):
    def ours(results):
        a, cells = _cells(results, ensemble)
        gaps = [g for _, _, g in cells]
        m = {"attack": a, "cells": len(cells), "improved": sum(g > 0 for g in gaps),
             "mean_gap": sum(gaps) / len(gaps), "min_gap": min(gaps)}
        srcs = sorted({s for _, s, _ in cells})
        return (f"{a}: p-Bottom − standard over {len(cells)} (keep, source) cells, sources {', '.join(srcs)}: "
                f"mean {pts(m['mean_gap'])}, min {pts(m['min_gap'])}"), m
    return ours


def verdict_cells(m):
    text = f"{m['improved']}/{m['cells']} cells improved, mean {pts(m['mean_gap'])}"
    if m["improved"] == m["cells"] and m["mean_gap"] >= 0.10:
        return REPRODUCED, text
    if m["improved"] > m["cells"] / 2:
        return PARTLY, text + " (reproduced needs every cell and mean ≥ +10 pts)"
    return NOT_REPRODUCED, text


# --------------------------------------------------------------------------- 001-ablation

def _ablation(results):
    sdr = need(results, "success_defense_rate")
    first = next(iter(sdr.values()), None)
    if not isinstance(first, Mapping):
        raise Missing("numbers['success_defense_rate'][<row>]")
    return sdr, attack_starting(first, "PGD")


def _pairs(results, suffix_of: Callable[[float], str]):
    """(keep, p-Bottom SDR, variant SDR, p-Bottom clean, variant clean) for each keep with both rows."""
    sdr, a = _ablation(results)
    clean = need(results, "clean_accuracy")
    out = []
    for keep, k in sorted(bottom_keys(sdr).items()):
        v = suffix_of(keep)
        if v in sdr and v in clean and k in clean:
            out.append((keep, _num(sdr[k][a]), _num(sdr[v][a]), _num(clean[k]), _num(clean[v])))
    if not out:
        raise Missing(f"numbers['success_defense_rate'][{suffix_of(0.1)!r}] (or that variant at any keep)")
    return a, out


def _ours_pairs(suffix_of: Callable[[float], str], name: str):
    def ours(results):
        a, rows = _pairs(results, suffix_of)
        text = "; ".join(f"keep {p:g}: p-Bottom {pct(b)} (clean {pct(cb)}) vs {suffix_of(p)} {pct(v)} (clean {pct(cv)})"
                         for p, b, v, cb, cv in rows)
        return f"{a}, {name}: {text}", {"attack": a, "rows": [list(r) for r in rows]}
    return ours


def verdict_bottom_minus_variant(big: float):
    def verdict(m):
        gaps = [b - v for _, b, v, _, _ in m["rows"]]
        text = ", ".join(f"keep {r[0]:g} {pts(g)}" for r, g in zip(m["rows"], gaps))
        if all(g >= big for g in gaps):
            return REPRODUCED, f"p-Bottom − variant: {text} (all ≥ {100 * big:.0f} pts)"
        if sum(gaps) > 0:
            return PARTLY, f"p-Bottom − variant: {text} (same direction on average, not ≥ {100 * big:.0f} pts at every keep)"
        return NOT_REPRODUCED, f"p-Bottom − variant: {text}"
    return verdict


def verdict_sm(m):
    p, b, v, cb, cv = min(m["rows"], key=lambda r: r[0])
    drop = cb - cv
    if drop >= 0.02:
        return REPRODUCED, f"at keep {p:g} the shared mask costs {100 * drop:.1f} pts of clean accuracy (≥ 2)"
    if drop > 0:
        return PARTLY, f"at keep {p:g} the shared mask costs {100 * drop:.1f} pts of clean accuracy (< 2)"
    return NOT_REPRODUCED, f"at keep {p:g} the shared mask does not lower clean accuracy ({pts(-drop)})"


def verdict_widen(m):
    p, b, v, cb, cv = min(m["rows"], key=lambda r: r[0])
    gain, loss = cv - cb, b - v
    ok = (gain >= 0.005, loss <= 0.10)
    text = f"keep {p:g}: ×n clean accuracy {pts(gain)}, defense rate {pts(-loss)}"
    if all(ok):
        return REPRODUCED, text + " (higher accuracy, robustness within 10 pts)"
    if any(ok):
        return PARTLY, text + " (one of: higher accuracy, robustness within 10 pts)"
    return NOT_REPRODUCED, text


def verdict_ensemble_variant(m):
    p, b, v, cb, cv = min(m["rows"], key=lambda r: r[0])
    ok = (cv > cb, v > b)
    text = f"keep {p:g}: EN − single: clean {pts(cv - cb)}, defense rate {pts(v - b)}"
    if all(ok):
        return REPRODUCED, text + " (both higher)"
    if any(ok):
        return PARTLY, text + " (one higher)"
    return NOT_REPRODUCED, text


_MIXED = re.compile(r"^(\d*\.?\d+)-Bottom, ?(\d*\.?\d+)-Top$")


def ours_mixed(results):
    sdr, a = _ablation(results)
    bottoms = bottom_keys(sdr)
    rows = []
    for k in sdr:
        mm = _MIXED.match(_label(k))
        if mm and float(mm.group(1)) in bottoms:
            p = float(mm.group(1))
            rows.append((_label(k), p, _num(sdr[bottoms[p]][a]), _num(sdr[k][a])))
    if not rows:
        raise Missing("numbers['success_defense_rate'][<a 'p-Bottom, q-Top' row with its p-Bottom row>]")
    text = "; ".join(f"{lab} {pct(v)} vs {p:g}-Bottom {pct(b)}" for lab, p, b, v in rows)
    return f"{a}: {text}", {"attack": a, "rows": rows}


def verdict_mixed(m):
    gaps = [b - v for _, _, b, v in m["rows"]]
    text = ", ".join(f"{r[0]}: {pts(g)}" for r, g in zip(m["rows"], gaps))
    if all(g >= 0.02 for g in gaps):
        return REPRODUCED, f"bottom-only − bottom+top: {text} (all ≥ 2 pts)"
    if sum(gaps) > 0:
        return PARTLY, f"bottom-only − bottom+top: {text}"
    return NOT_REPRODUCED, f"bottom-only − bottom+top: {text}"


def ours_keep_trend(results):
    sdr, a = _ablation(results)
    clean = need(results, "clean_accuracy")
    rows = [(p, _num(sdr[k][a]), _num(clean[k])) for p, k in sorted(bottom_keys(sdr).items(), reverse=True)]
    if len(rows) < 2:
        raise Missing("numbers['success_defense_rate'][<p-Bottom rows at two keeps or more>]")
    text = ", ".join(f"keep {p:g}: {pct(s)} (clean {pct(c)})" for p, s, c in rows)
    return f"{a} defense rate by keep: {text}", {"attack": a, "rows": rows}


def verdict_keep_trend(m):
    rows = m["rows"]  # keep descending
    sdr_up = all(b[1] >= a[1] - 0.01 for a, b in zip(rows, rows[1:]))
    clean_down = all(b[2] <= a[2] + 0.01 for a, b in zip(rows, rows[1:]))
    if sdr_up and clean_down:
        return REPRODUCED, "defense rate rises and clean accuracy falls as keep decreases (1 pt tolerance)"
    if rows[-1][1] > rows[0][1]:
        return PARTLY, (f"smallest keep defends better than largest ({pts(rows[-1][1] - rows[0][1])}) but not "
                        f"monotone in both (defense rising: {sdr_up}, accuracy falling: {clean_down})")
    return NOT_REPRODUCED, "defense rate does not rise as keep decreases"


# --------------------------------------------------------------------------- 001-gaussian

def _gaussian(results):
    sig = [float(s) for s in need(results, "sigmas_255")]
    acc = need(results, "accuracy")
    return sig, acc, standard_key(acc), bottom_keys(acc)


def ours_gaussian_keep01(results):
    sig, acc, std, keeps = _gaussian(results)
    keep = pick_keep(sorted(keeps))
    inrange = [i for i, s in enumerate(sig) if s <= 32]
    if not inrange:
        raise Missing("numbers['sigmas_255'] (no σ ≤ 32)")
    i = inrange[-1]
    j = min(range(len(sig)), key=lambda t: abs(sig[t] - 16))
    d, s = [_num(v) for v in acc[keeps[keep]]], [_num(v) for v in acc[std]]
    m = {"sigma": sig[i], "defective": d[i], "standard": s[i], "sigma16": sig[j], "defective16": d[j],
         "standard16": s[j], "keep": keep, "n_images": need(results, "n_images")}
    return (f"σ={sig[j]:g}: {_label(keeps[keep])} {pct(d[j])} vs {_label(std)} {pct(s[j])}; "
            f"σ={sig[i]:g}: {pct(d[i])} vs {pct(s[i])} ({m['n_images']} images all models classify correctly)"), m


def verdict_gaussian_keep01(m):
    return _gap_verdict(m["defective"] - m["standard"], 0.10, f"at σ={m['sigma']:g} defective − standard")


def ours_gaussian_all(results):
    sig, acc, std, keeps = _gaussian(results)
    if not keeps:
        raise Missing("numbers['accuracy'][<a p-Bottom row>]")
    idx = [i for i, s in enumerate(sig) if s <= 32]
    cmp = [(p, sig[i], _num(acc[k][i]) - _num(acc[std][i])) for p, k in sorted(keeps.items()) for i in idx]
    last = [g for p, s, g in cmp if s == sig[idx[-1]]]
    m = {"comparisons": len(cmp), "not_below": sum(g >= -0.005 for _, _, g in cmp),
         "min_gap_at_largest": min(last), "largest_sigma": sig[idx[-1]]}
    return (f"{m['not_below']}/{m['comparisons']} (keep, σ ≤ 32) points with defective ≥ standard; at σ="
            f"{m['largest_sigma']:g} the smallest gap is {pts(m['min_gap_at_largest'])}"), m


def verdict_gaussian_all(m):
    if m["not_below"] == m["comparisons"] and m["min_gap_at_largest"] >= 0.05:
        return REPRODUCED, f"every defective model at or above standard at every σ ≤ 32, ≥ 5 pts at σ={m['largest_sigma']:g}"
    if m["not_below"] > m["comparisons"] / 2:
        return PARTLY, f"{m['not_below']}/{m['comparisons']} points at or above standard (0.5 pt tolerance)"
    return NOT_REPRODUCED, f"only {m['not_below']}/{m['comparisons']} points at or above standard"


# --------------------------------------------------------------------------- 001-patch-shuffle

def ours_shuffle(results):
    acc = need(results, "accuracy")
    s, d = need(results, "accuracy", "Standard CNN"), need(results, "accuracy", "Defective CNN")
    ks = [k for k in s if k in d]
    if not ks:
        raise Missing("numbers['accuracy']['Standard CNN'][<k x k>]")
    gaps = {k: _num(d[k]) - _num(s[k]) for k in ks}
    return ("; ".join(f"{k}: defective {pct(_num(d[k]))} vs standard {pct(_num(s[k]))}" for k in ks)
            + f" ({need(results, 'n_images')} images)"), {"gaps": gaps, "n_images": need(results, "n_images"),
                                                         "models": list(acc)}


def verdict_shuffle(m):
    gaps = m["gaps"]
    text = ", ".join(f"{k} {pts(g)}" for k, g in gaps.items())
    if all(g < 0 for g in gaps.values()) and min(gaps.values()) <= -0.05:
        return REPRODUCED, f"defective − standard: {text} (lower at every k, ≥ 5 pts at one)"
    if any(g < 0 for g in gaps.values()):
        return PARTLY, f"defective − standard: {text} (lower at some k only, or by < 5 pts)"
    return NOT_REPRODUCED, f"defective − standard: {text} (never lower)"


# --------------------------------------------------------------------------- 001-boundary

def ours_boundary(other: str):
    def ours(results):
        s = _num(need(results, "S(M)", "Standard CNN"))
        o = _num(need(results, "S(M)", other))
        return f"S(M): {other} {o:.2g} vs Standard CNN {s:.2g} ({need(results, 'n_images')} images)", {
            "standard": s, "other": o, "ratio": o / s if s > 0 else float("inf")}
    return ours


def verdict_boundary_defective(m):
    r = m["ratio"]
    if r >= 2:
        return REPRODUCED, f"defective S(M) is {r:.2g}x standard's (≥ 2x)"
    if r > 1:
        return PARTLY, f"defective S(M) is {r:.2g}x standard's (> 1x, < 2x)"
    return NOT_REPRODUCED, f"defective S(M) is {r:.2g}x standard's (not larger)"


def verdict_boundary_ls(m):
    r = m["ratio"]
    if r <= 1.5:
        return REPRODUCED, f"label smoothing S(M) is {r:.2g}x standard's (≤ 1.5x: no real gain)"
    if r <= 2:
        return PARTLY, f"label smoothing S(M) is {r:.2g}x standard's (1.5-2x)"
    return NOT_REPRODUCED, f"label smoothing S(M) is {r:.2g}x standard's (> 2x: it does help)"


# --------------------------------------------------------------------------- 001-whitebox

def ours_whitebox(results):
    white = need(results, "whitebox_success_defense_rate")
    std = standard_key(white)
    keeps = bottom_keys(white)
    if not keeps:
        raise Missing("numbers['whitebox_success_defense_rate'][<a p-Bottom row>]")
    attacks = [a for a in white[std] if not _ADAPTIVE_LABEL.search(a)]
    gaps = {f"{_label(k)} {a}": _num(white[k][a]) - _num(white[std][a])
            for _, k in sorted(keeps.items()) for a in attacks if a in white[k]}
    text = "; ".join(f"{a}: " + ", ".join(f"{_label(k)} {pct(_num(white[k][a]))}" for k in [std, *keeps.values()])
                     for a in attacks)
    return text, {"gaps": gaps}


def verdict_whitebox(m):
    g = list(m["gaps"].values())
    if not g:
        raise ValueError("no white-box comparisons")
    if all(x >= -0.01 for x in g) and max(g) >= 0.05:
        return REPRODUCED, f"defective ≥ standard on all {len(g)} (model, attack) pairs, up to {pts(max(g))}"
    if sum(g) > 0:
        return PARTLY, f"defective − standard mean {pts(sum(g) / len(g))}, min {pts(min(g))}, max {pts(max(g))}"
    return NOT_REPRODUCED, f"defective − standard mean {pts(sum(g) / len(g))}"


def ours_graybox_dif(results):
    gray = need(results, "graybox_success_defense_rate")
    pairs = []
    for p, k in sorted(bottom_keys(gray).items()):
        dif = next((d for d in gray if _label(d) == f"{_label(k)}_DIF"), None)
        if dif is None:
            continue
        for src in gray[k]:
            if src in gray[dif]:
                pairs.append((f"{_label(k)} from {src}", _num(gray[k][src]), _num(gray[dif][src])))
    if not pairs:
        raise Missing("numbers['graybox_success_defense_rate'][<p-Bottom and p-Bottom_DIF rows>]")
    return "; ".join(f"{n}: other init {pct(a)} vs DIF {pct(b)}" for n, a, b in pairs), {
        "max_abs_diff": max(abs(a - b) for _, a, b in pairs), "pairs": pairs}


def verdict_graybox_dif(m):
    d = m["max_abs_diff"]
    if d <= 0.05:
        return REPRODUCED, f"the two gray-box attacks differ by at most {100 * d:.1f} pts (≤ 5)"
    if d <= 0.10:
        return PARTLY, f"the two gray-box attacks differ by up to {100 * d:.1f} pts (5-10)"
    return NOT_REPRODUCED, f"the two gray-box attacks differ by up to {100 * d:.1f} pts (> 10)"


def ours_graybox_vs_standard(res):
    """Defective gray-box (001-whitebox: same keep, other init, PGD16 crafted on a p-Bottom
    model) vs standard gray-box (001-transfer: the standard target against the same-arch
    standard source of another seed, the same PGD16 column)."""
    gray = need(res["001-whitebox"], "graybox_success_defense_rate")
    tr = res["001-transfer"]
    table, a, std, _, _, source = _transfer(tr)
    s = _num(table[std][source])
    diag = []
    for p, k in sorted(bottom_keys(gray).items()):
        if _label(k) in gray[k]:
            diag.append((_label(k), _num(gray[k][_label(k)])))
    if not diag:
        raise Missing("001-whitebox numbers['graybox_success_defense_rate'][p-Bottom][p-Bottom] (same-keep source)")
    return ("gray-box " + ", ".join(f"{n} {pct(v)}" for n, v in diag)
            + f" vs standard {_label(std)} {pct(s)} ({a} from {source}, 001-transfer)"), {"standard": s, "diag": diag}


def verdict_graybox_vs_standard(m):
    gaps = [v - m["standard"] for _, v in m["diag"]]
    text = ", ".join(f"{n} {pts(g)}" for (n, _), g in zip(m["diag"], gaps))
    if all(g >= 0.10 for g in gaps):
        return REPRODUCED, f"defective − standard gray-box: {text} (all ≥ 10 pts)"
    if all(g > 0 for g in gaps):
        return PARTLY, f"defective − standard gray-box: {text}"
    return NOT_REPRODUCED, f"defective − standard gray-box: {text}"


# --------------------------------------------------------------------------- adaptive rows of 001

def ours_restarts(results):
    """001-whitebox's ``numbers["adaptive_whitebox"]``: per model label the success defense rate
    under the seed's PGD (``non_adaptive``) and under PGD with restarts (``adaptive``)."""
    attack = need(results, "adaptive_whitebox", "attack")
    table = need(results, "adaptive_whitebox", "success_defense_rate")
    std = standard_key(table)
    keeps = bottom_keys(table)
    if not keeps:
        raise Missing("numbers['adaptive_whitebox']['success_defense_rate'][<a p-Bottom row>]")
    rate = {k: _num(need(results, "adaptive_whitebox", "success_defense_rate", k, "adaptive"))
            for k in [std, *keeps.values()]}
    margins = {_label(k): rate[k] - rate[std] for _, k in sorted(keeps.items())}
    text = f"{attack}: " + ", ".join(f"{_label(k)} {pct(v)}" for k, v in rate.items())
    return text, {"attack": attack, "margins": margins}


def verdict_restarts(m):
    best = max(m["margins"].values())
    return _adaptive_verdict(best, 0.05, 0.01, f"best defective − standard under {m['attack']}")


def ours_graybox_transfer(results):
    table, a, std, _, _, source = _transfer(results)
    rows = [(k, _num(table[k][GRAYBOX_COLUMN]), _num(table[k][source])) for k in table
            if table[k].get(GRAYBOX_COLUMN) is not None]
    if not rows:
        raise Missing(f"numbers['success_defense_rate'][{a!r}][<p-Bottom>][{GRAYBOX_COLUMN!r}]")
    s = _num(table[std][source])
    text = "; ".join(f"{_label(k)}: gray-box {pct(g)} vs black-box {pct(b)}" for k, g, b in rows)
    return f"{a}: {text}; standard vs black-box {_label(std)} {pct(s)}", {
        "standard": s, "rows": [(_label(k), g, b) for k, g, b in rows]}


def verdict_graybox_transfer(m):
    margin = min(g for _, g, _ in m["rows"]) - m["standard"]
    return _adaptive_verdict(margin, 0.10, 0.02, "gray-box defense rate − standard's black-box rate")


def ours_multisurrogate_defective(results):
    rates = need(results, "transfer_rate")
    std = need(results, "transfer_rate", "Standard")
    keeps = bottom_keys(rates)
    if not keeps:
        raise Missing("numbers['transfer_rate'][<a p-Bottom family>]")
    k = keeps[pick_keep(sorted(keeps))]
    d = _num(rates[k])
    return (f"fooled by validated multi-surrogate examples: {k} {pct(d)} vs Standard {pct(_num(std))} "
            f"({need(results, 'validated')}/{need(results, 'generated')} examples validated)"), {
        "standard": _num(std), "defective": d}


def verdict_multisurrogate_defective(m):
    return _adaptive_verdict(m["standard"] - m["defective"], 0.10, 0.02, "standard − defective transfer rate")


# --------------------------------------------------------------------------- 002-mad

def _mad(results):
    rates = need(results, "rates")
    if not rates:
        raise Missing("numbers['rates'] (empty)")
    col_name = "rate 0.75" if "rate 0.75" in rates else list(rates)[-1]
    return need(results, "undefended"), rates[col_name], col_name


def _static_attacks(undef: Mapping[str, Any], col: Mapping[str, Any]) -> list[str]:
    return [a for a in undef if a != "Benign" and a in col and not _ADAPTIVE_LABEL.search(a)]


def ours_mad_main(results):
    undef, col, name = _mad(results)
    attacks = _static_attacks(undef, col)
    if not attacks:
        raise Missing("numbers['undefended'][<an attack>]")
    gains = {a: _num(col[a]) - _num(undef[a]) for a in attacks}
    text = "; ".join(f"{a}: {pct(_num(undef[a]))} → {pct(_num(col[a]))}" for a in attacks)
    return f"no defense → MAD ({name}): {text}", {"gains": gains, "column": name}


def verdict_mad_main(m):
    g = m["gains"]
    text = ", ".join(f"{a} {pts(v)}" for a, v in g.items())
    if all(v >= 0.10 for v in g.values()):
        return REPRODUCED, f"MAD gains ≥ 10 pts on every attack ({text})"
    if sum(v > 0 for v in g.values()) > len(g) / 2:
        return PARTLY, f"MAD gains on most attacks, not ≥ 10 pts on all ({text})"
    return NOT_REPRODUCED, f"MAD gains on at most half the attacks ({text})"


def ours_mad_rates(results):
    undef, _, _ = _mad(results)
    rates = need(results, "rates")
    rows = []
    for name, col in rates.items():
        attacks = _static_attacks(undef, col)
        rows.append((name, _num(col["Benign"]), sum(_num(col[a]) for a in attacks) / max(1, len(attacks))))
    if len(rows) < 2:
        raise Missing("numbers['rates'] (two mask rates or more)")
    return "; ".join(f"{n}: benign {pct(b)}, mean attacked {pct(a)}" for n, b, a in rows), {"rows": rows}


def verdict_mad_rates(m):
    rows = m["rows"]
    defense_up = all(b[2] >= a[2] - 0.01 for a, b in zip(rows, rows[1:]))
    benign_down = all(b[1] <= a[1] + 0.01 for a, b in zip(rows, rows[1:]))
    if defense_up and benign_down:
        return REPRODUCED, "higher rate: better defense and lower benign accuracy (1 pt tolerance)"
    if defense_up or benign_down:
        return PARTLY, f"only one trend holds (defense rising: {defense_up}, benign falling: {benign_down})"
    return NOT_REPRODUCED, "neither trend holds"


_GRIDS = re.compile(r"^(\d+)x\d+ / (\d+)x\d+$")


def ours_mad_grids(results):
    undef = need(results, "undefended")
    t4 = need(results, "grid_sizes")
    by_train: dict[int, list] = {}
    for name, col in t4.items():
        mm = _GRIDS.match(name)
        if not mm:
            continue
        attacks = _static_attacks(undef, col)
        by_train.setdefault(int(mm.group(1)), []).append(
            (int(mm.group(2)), _num(col["Benign"]), sum(_num(col[a]) for a in attacks) / max(1, len(attacks))))
    groups = {g: sorted(v) for g, v in by_train.items() if len(v) >= 2}
    if not groups:
        raise Missing("numbers['grid_sizes'] (two test grids for one train grid)")
    text = "; ".join(f"train {g}: " + ", ".join(f"test {t}: benign {pct(b)}, attacked {pct(a)}" for t, b, a in v)
                     for g, v in groups.items())
    return text, {"groups": {str(g): v for g, v in groups.items()}}


def verdict_mad_grids(m):
    benign_up = defense_down = True
    for v in m["groups"].values():
        benign_up &= v[-1][1] >= v[0][1]
        defense_down &= v[0][2] >= v[-1][2]
    if benign_up and defense_down:
        return REPRODUCED, "larger test grid: higher benign accuracy; smaller test grid: better defense"
    if benign_up or defense_down:
        return PARTLY, f"only one holds (benign up with grid: {benign_up}, defense up as grid shrinks: {defense_down})"
    return NOT_REPRODUCED, "neither holds"


def ours_mad_cw(results):
    undef, col, name = _mad(results)
    attacks = _static_attacks(undef, col)
    cw = [a for a in attacks if a.upper().startswith("CW")]
    if not cw:
        raise Missing("numbers['undefended'][<a CW attack>]")
    gains = {a: _num(col[a]) - _num(undef[a]) for a in attacks}
    order = sorted(gains, key=gains.get, reverse=True)
    return (f"MAD gain ({name}): " + ", ".join(f"{a} {pts(gains[a])}" for a in order)), {
        "rank": order.index(cw[0]) + 1, "n": len(order), "cw": cw[0]}


def verdict_mad_cw(m):
    if m["rank"] == 1:
        return REPRODUCED, f"{m['cw']} has the largest MAD gain of {m['n']} attacks"
    if m["rank"] <= (m["n"] + 1) / 2:
        return PARTLY, f"{m['cw']} ranks {m['rank']} of {m['n']} by MAD gain"
    return NOT_REPRODUCED, f"{m['cw']} ranks {m['rank']} of {m['n']} by MAD gain"


def ours_mad_eot(results):
    undef, col, name = _mad(results)
    cfg = results.get("config", {})
    adaptive = cfg.get("adaptive") or {}
    label = adaptive.get("label") or next((a for a in col if _ADAPTIVE_LABEL.search(a)), None)
    if not label or label not in col:
        raise Missing(f"numbers['rates'][{name!r}][<the EOT-adaptive attack>]")
    # The white-box baseline: the same attack (name, norm, eps) on the undefended model.
    static = [p for p in cfg.get("attacks", []) if p.get("name") == adaptive.get("name")
              and str(p.get("norm")) == str(adaptive.get("norm")) and p.get("eps255") == adaptive.get("eps255")
              and p.get("eps") == adaptive.get("eps")]
    match = None
    if static:
        from .seed002_mad import attack_row_label as mad_label

        match = mad_label(static[0])
    if match is None or match not in undef:
        raise Missing("numbers['undefended'][<the non-adaptive attack matching config['adaptive']>]")
    m = {"eot": _num(col[label]), "undefended": _num(undef[match]), "transfer": _num(col[match]),
         "benign": _num(col["Benign"]), "attack": match}
    return (f"MAD ({name}) under {label}: {pct(m['eot'])} (vs {pct(m['transfer'])} against {match} crafted on the "
            f"undefended model; the undefended model under {match}: {pct(m['undefended'])})"), m


def verdict_mad_eot(m):
    return _adaptive_verdict(m["eot"] - m["undefended"], 0.20, 0.05,
                             f"MAD under EOT-PGD − undefended model under {m['attack']}")


# --------------------------------------------------------------------------- 003

def _family(table: Mapping[str, Any], prefix: str, what: str) -> str:
    for k in table:
        if k.startswith(prefix):
            return k
    raise Missing(f"numbers[{what!r}][<a {prefix!r} family>]")


def _ours_cw(which: str):
    def ours(results):
        numbers = need(results)
        key = which if which == "single" else next((k for k in numbers if k.startswith("multi_")), None)
        if key is None:
            raise Missing("numbers['multi_<n>']")
        table = need(results, key)
        rs = _family(table, "RS-1", key)
        std = need(results, key, "Standard")
        r = table[rs]
        for label, v in ((rs, r), ("Standard", std)):
            if v.get("mean") is None:  # results.json writes the NaN of "no successful example" as null
                raise Missing(f"numbers[{key!r}][{label!r}]['mean'] (null: no successful targeted C&W example)")
        m = {"key": key, "standard": std.get("mean"), "rs": r.get("mean"), "rs_success": r.get("success_rate"),
             "standard_success": std.get("success_rate")}
        keeps = bottom_keys(table)
        extra = ""
        if keeps:
            d = table[keeps[pick_keep(sorted(keeps))]]
            extra = f"; defective {_fmt_l2(d)}"
        return f"{key}: targeted C&W-L2 mean±std {rs} {_fmt_l2(r)} vs Standard {_fmt_l2(std)}{extra}", m
    return ours


def _fmt_l2(v: Mapping[str, Any]) -> str:
    mean, std = v.get("mean"), v.get("std")
    sr = v.get("success_rate")
    body = "n/a" if mean is None else f"{mean:.3f} ± {std or 0:.3f}"
    return body + (f" (success {pct(sr)})" if sr is not None else "")


def verdict_cw(m):
    if m["rs"] is None or m["standard"] is None or not m["standard"]:
        return NOT_RUN, "no successful targeted C&W example on one model, so no distance to compare"
    r = m["rs"] / m["standard"]
    if r >= 1.5:
        return REPRODUCED, f"RS-1 needs {r:.2g}x the standard model's L2 (≥ 1.5x)"
    if r >= 0.9:
        return PARTLY, f"RS-1 needs {r:.2g}x the standard model's L2 (comparable: 0.9-1.5x)"
    return NOT_REPRODUCED, f"RS-1 needs {r:.2g}x the standard model's L2 (< 0.9x)"


def _ours_stability(key: str, levels_key: str, pick: str):
    def ours(results):
        table = need(results, key)
        levels = need(results, levels_key)
        rs = _family(table, "RS-1", key)
        std = need(results, key, "Standard")
        i = len(levels) - 1 if pick == "last" else 0
        m = {"level": levels[i], "rs": _num(table[rs][i]), "standard": _num(std[i]),
             "rs_mean": sum(map(_num, table[rs])) / len(levels), "standard_mean": sum(map(_num, std)) / len(levels)}
        keeps = bottom_keys(table)
        extra = ""
        if keeps:
            k = keeps[pick_keep(sorted(keeps))]
            extra = f", {k} {pct(_num(table[k][i]))}"
        name = "L2" if "noise" in key else "JPEG quality"
        return (f"stability at {name} {levels[i]}: {rs} {pct(m['rs'])} vs Standard {pct(m['standard'])}{extra} "
                f"({need(results, 'n_images')} images)"), m
    return ours


def verdict_stability(big: float):
    def verdict(m):
        g = m["rs"] - m["standard"]
        if g >= big:
            return REPRODUCED, f"RS-1 − standard at the hardest level {pts(g)} (≥ {100 * big:.0f} pts)"
        if g > 0 or m["rs_mean"] > m["standard_mean"]:
            return PARTLY, (f"RS-1 − standard {pts(g)} at the hardest level, {pts(m['rs_mean'] - m['standard_mean'])}"
                            " on average over levels")
        return NOT_REPRODUCED, f"RS-1 not more stable ({pts(g)} at the hardest level)"
    return verdict


def ours_translucent(results):
    rates = need(results, "transfer_rate")
    rs = _family(rates, "RS-1", "transfer_rate")
    std = need(results, "transfer_rate", "Standard")
    return (f"fooled by validated multi-surrogate examples: {rs} {pct(_num(rates[rs]))} vs Standard "
            f"{pct(_num(std))} ({need(results, 'validated')}/{need(results, 'generated')} validated)"), {
        "rs": _num(rates[rs]), "standard": _num(std)}


def verdict_translucent(m):
    return _gap_verdict(m["standard"] - m["rs"], 0.10, "standard − RS-1 transfer rate")


def ours_rs_eot(results):
    """003-cw-distance's ``numbers["adaptive_spiking"]["accuracy"]``: per row (standard single
    prediction, RS-1 single prediction, RS-1 MC average / vote) ``adaptive`` = accuracy under
    EOT-PGD and ``reference`` = the standard model under the same PGD white-box."""
    attack = need(results, "adaptive_spiking", "attack")
    table = need(results, "adaptive_spiking", "accuracy")
    rows = {k: v for k, v in table.items() if isinstance(v, Mapping) and v.get("adaptive") is not None}
    if not rows:
        raise Missing("numbers['adaptive_spiking']['accuracy'][<an RS-1 MC/vote row with 'adaptive'>]")
    best = max(rows, key=lambda k: _num(rows[k]["adaptive"]))
    m = {"rs": _num(rows[best]["adaptive"]), "standard": _num(rows[best]["reference"]), "key": best}
    return (f"{attack}: " + ", ".join(f"{k} {pct(_num(v['adaptive']))}" for k, v in rows.items())
            + f"; standard under the same PGD white-box {pct(m['standard'])}"), m


def verdict_rs_eot(m):
    return _adaptive_verdict(m["rs"] - m["standard"], 0.20, 0.05, "RS-1 − standard accuracy under EOT-PGD")


# --------------------------------------------------------------------------- 004-randomization

def _rand(results, kind: str = "resize_pad"):
    return need(results, "accuracy", kind)


def ours_rand_clean(results):
    plain = _num(need(results, "accuracy", "plain_clean"))
    d = _num(need(results, "accuracy", "resize_pad", "clean"))
    return f"clean top-1: plain {pct(plain)} vs random resize+pad {pct(d)} ({need(results, 'n_images')} images)", {
        "plain": plain, "defended": d}


def verdict_rand_clean(m):
    drop = m["plain"] - m["defended"]
    if drop <= 0.03:
        return REPRODUCED, f"accuracy drop {100 * drop:.1f} pts (≤ 3)"
    if drop <= 0.10:
        return PARTLY, f"accuracy drop {100 * drop:.1f} pts (3-10)"
    return NOT_REPRODUCED, f"accuracy drop {100 * drop:.1f} pts (> 10)"


def _ours_scenario(kind: str, scenario: str):
    def ours(results):
        res = _rand(results, kind)
        plain = need(results, "accuracy", kind, "plain_model_vanilla")
        sc = need(results, "accuracy", kind, scenario)
        attacks = [a for a in sc if a in plain]
        if not attacks:
            raise Missing(f"numbers['accuracy'][{kind!r}][{scenario!r}][<an attack>]")
        gains = {a: _num(sc[a]) - _num(plain[a]) for a in attacks}
        text = "; ".join(f"{a}: plain {pct(_num(plain[a]))} → {kind} {pct(_num(sc[a]))}" for a in attacks)
        return f"{scenario} examples: {text}", {
            "gains": gains, "clean": _num(res["clean"]), "acc": {a: _num(sc[a]) for a in attacks},
            "vanilla": {a: _num(v) for a, v in (res.get("vanilla") or {}).items() if v is not None}}
    return ours


def _iterative(a: str) -> bool:
    return a.upper().startswith(("DEEPFOOL", "CW", "C&W", "PGD", "BIM"))


def verdict_rand_gain(m):
    g = m["gains"]
    text = ", ".join(f"{a} {pts(v)}" for a, v in g.items())
    if all(v >= 0.10 for v in g.values()):
        return REPRODUCED, f"randomization gains ≥ 10 pts on every attack ({text})"
    if sum(g.values()) > 0:
        return PARTLY, f"gains on average, not ≥ 10 pts on every attack ({text})"
    return NOT_REPRODUCED, f"no gain ({text})"


def verdict_rand_iterative(m):
    it = {a: v for a, v in m["acc"].items() if _iterative(a)}
    if not it:
        raise ValueError("no iterative attack (DeepFool/C&W) in the results")
    worst = min(it.values())
    gain = min(m["gains"][a] for a in it)
    text = (", ".join(f"{a} {pct(v)}" for a, v in it.items()) + f" vs clean {pct(m['clean'])}; "
            f"smallest gain over the plain model {pts(gain)}")
    # Both halves of the claim: the attack works on the plain model (a large gain), and the
    # randomized model stays near its clean accuracy (which must itself not have collapsed).
    if worst >= m["clean"] - 0.10 and gain >= 0.20:
        return REPRODUCED, f"iterative examples barely hurt the randomized model ({text})"
    if gain >= 0.20:
        return PARTLY, f"large gain but clearly below clean accuracy ({text})"
    return NOT_REPRODUCED, f"iterative attacks still hurt ({text})"


def verdict_rand_pixel(m):
    g = m["gains"]
    it = [v for a, v in g.items() if _iterative(a)]
    single = [v for a, v in g.items() if not _iterative(a)]
    text = ", ".join(f"{a} {pts(v)}" for a, v in g.items())
    if it and min(it) >= 0.20 and all(v > 0 for v in single):
        return REPRODUCED, f"iterative gains ≥ 20 pts, single-step gains > 0 ({text})"
    if sum(g.values()) > 0:
        return PARTLY, f"gains on average ({text})"
    return NOT_REPRODUCED, f"no gain ({text})"


def verdict_rand_ensemble(m):
    g = m["gains"]
    mean = sum(g.values()) / len(g)
    text = ", ".join(f"{a} {pts(v)}" for a, v in g.items())
    if all(v > 0 for v in g.values()) and mean >= 0.10:
        return REPRODUCED, f"randomization still raises accuracy on every attack, mean {pts(mean)} ({text})"
    if mean > 0:
        return PARTLY, f"mean gain {pts(mean)} ({text})"
    return NOT_REPRODUCED, f"no gain ({text})"


def verdict_rand_stronger(m):
    diffs = {a: m["vanilla"][a] - v for a, v in m["acc"].items() if a in m["vanilla"]}
    if not diffs:
        raise ValueError("no vanilla accuracies to compare with")
    mean = sum(diffs.values()) / len(diffs)
    return _gap_verdict(mean, 0.05, "vanilla − ensemble-pattern accuracy, mean over attacks")


def ours_rand_eot(results):
    return _ours_scenario("resize_pad", "eot")(results)


def verdict_rand_eot(m):
    g = m["gains"]
    mean = sum(g.values()) / len(g)
    return _adaptive_verdict(mean, 0.20, 0.05, "EOT accuracy − plain model's white-box accuracy, mean over attacks")


def ours_fgsm_eps(results):
    sc = need(results, "accuracy", "resize_pad", "vanilla")
    eps = sorted((float(re.sub(r"^FGSM", "", a)), a) for a in sc if re.fullmatch(r"FGSM\d+(\.\d+)?", a))
    if len(eps) < 2:
        raise Missing("numbers['accuracy']['resize_pad']['vanilla'][<FGSM at two ε or more>]")
    rows = [(e, _num(sc[a])) for e, a in eps]
    return "vanilla FGSM on resize+pad: " + ", ".join(f"ε={e:g}: {pct(v)}" for e, v in rows), {"rows": rows}


def verdict_fgsm_eps(m):
    rows = m["rows"]
    down = all(b[1] <= a[1] + 0.01 for a, b in zip(rows, rows[1:]))
    if down and rows[-1][1] < rows[0][1]:
        return REPRODUCED, "accuracy falls as ε grows"
    if rows[-1][1] < rows[0][1]:
        return PARTLY, "largest ε hurts more than smallest, not monotone"
    return NOT_REPRODUCED, "larger ε does not hurt more"


# --------------------------------------------------------------------------- the catalogue

_T = "001-transfer"
_A = "001-ablation"
_RULE_CELLS = ("reproduced: defective > standard in every (keep, source) cell and mean gap ≥ 10 pts; "
               "partly: in more than half the cells; not reproduced: otherwise")

CLAIMS: list[Claim] = [
    # ------------------------------------------------------------------ seed 000 (Random Mask)
    Claim("000", "000-T1-blackbox",
          "CNNs with Random Mask achieve state-of-the-art performance against black-box adversarial attacks "
          "without applying any adversarial training",
          "Abstract; Table 1",
          "CIFAR-10 ResNet-18, transfer FGSM/PGD: Random Mask 86.31% / 90.30% (clean 90.08%) vs normal 26.99% / "
          "7.56% (clean 95.33%)",
          _T, ("success_defense_rate[FGSM*|PGD*][<standard>|<0.1-Bottom>][<first source>]",),
          "reproduced: defective − standard ≥ 10 pts on PGD and > 0 on FGSM; partly: higher on one; "
          "not reproduced: not higher",
          ours_transfer_headline, verdict_transfer_headline),
    Claim("000", "000-F4-noise",
          "networks with Random Mask always have higher accuracy than a normal network",
          "Section 3.1.2; Figure 4",
          "CIFAR-10, Gaussian noise σ ∈ {1…32} (0-255): curves only, Random Mask above normal at every σ",
          "001-gaussian", ("sigmas_255", "accuracy[<standard>|<p-Bottom>]"),
          "reproduced: every p-Bottom ≥ standard at every σ ≤ 32 (0.5 pt tolerance) and ≥ 5 pts at the largest; "
          "partly: at more than half the points; not reproduced: otherwise",
          ours_gaussian_all, verdict_gaussian_all),
    Claim("000", "000-T2-shallow-deep",
          "applying Random Mask to shallow layers enjoys significantly lower adversarial attack success rates",
          "Section 3.3; Table 2",
          "CIFAR-10 ResNet-18, PGD16 from DenseNet-121: 0.7-Shallow 47.76% vs 0.7-Deep 3.24% defense",
          _A, ("success_defense_rate[p-Bottom|p-Top][PGD*]", "clean_accuracy"),
          "reproduced: p-Bottom − p-Top ≥ 10 pts at every keep; partly: > 0 on average; not reproduced: otherwise",
          _ours_pairs(lambda p: f"{p:g}-Top", "bottom vs top"), verdict_bottom_minus_variant(0.10)),
    Claim("000", "000-T2-channel",
          "although our Random Mask network suffers a small drop in test accuracy due to the high drop ratio, we have a "
          "great gain in the robustness, compared with the channel-masking network",
          "Section 3.3; Table 2",
          "CIFAR-10 ResNet-18, PGD16: 0.9-Shallow 83.08% vs 0.9-ShallowDC 19.33% (drop ratio 0.9 = keep 0.1)",
          _A, ("success_defense_rate[p-Bottom|p-Bottom_DC][PGD*]", "clean_accuracy"),
          "reproduced: p-Bottom − p-Bottom_DC ≥ 10 pts at every keep; partly: > 0 on average; not reproduced: otherwise",
          _ours_pairs(lambda p: f"{p:g}-Bottom_DC", "neuron vs channel masks"), verdict_bottom_minus_variant(0.10)),
    Claim("000", "000-T2-same-mask",
          "applying the same mask to each channel will decrease the test accuracy",
          "Section 3.3; Table 2",
          "CIFAR-10 ResNet-18: 0.9-ShallowSM clean 74.28% vs 0.9-Shallow 87.68%",
          _A, ("clean_accuracy[p-Bottom|p-Bottom_SM]", "success_defense_rate[...][PGD*]"),
          "reproduced: SM clean accuracy ≥ 2 pts lower at the smallest keep; partly: lower by less; "
          "not reproduced: not lower",
          _ours_pairs(lambda p: f"{p:g}-Bottom_SM", "independent vs shared masks"), verdict_sm),
    Claim("000", "000-T2-widen",
          "increasing channels does help the network with Random Mask to get higher test accuracy while "
          "maintaining good robustness performance",
          "Section 3.3; Table 2",
          "CIFAR-10 ResNet-18: 0.9-Shallow×2 clean 90.49%, PGD16 66.86% vs 0.9-Shallow 87.68%, 83.08%",
          _A, ("clean_accuracy[p-Bottom|p-Bottom_x2]", "success_defense_rate[...][PGD*]"),
          "reproduced: ×n clean accuracy higher (≥ 0.5 pt) and defense rate within 10 pts; partly: one of the two",
          _ours_pairs(lambda p: f"{p:g}-Bottom_x2", "×2 channels"), verdict_widen),
    Claim("000", "000-T2-ensemble",
          "such ensemble methods can improve a network with Random Mask in both test accuracy and robustness",
          "Section 3.3; Table 2",
          "CIFAR-10 ResNet-18: 0.9-ShallowEN clean 89.45%, PGD16 85.14% vs 0.9-Shallow 87.68%, 83.08%",
          _A, ("clean_accuracy[p-Bottom|p-Bottom_EN]", "success_defense_rate[...][PGD*]"),
          "reproduced: EN higher in both clean accuracy and defense rate; partly: in one",
          _ours_pairs(lambda p: f"{p:g}-Bottom_EN", "ensemble of masks"), verdict_ensemble_variant),
    Claim("000", "000-T3-shuffle",
          "our network with Random Mask always has lower accuracy than the normal network on these randomly "
          "shuffled test images",
          "Appendix A; Table 3",
          "ImageNet ResNet-18, k×k patch shuffle k=2/4/8: normal 99.58/82.66/17.56% vs 0.7-Shallow 97.36/64.00/11.94%",
          "001-patch-shuffle", ("accuracy['Standard CNN'|'Defective CNN'][<k>x<k>]",),
          "reproduced: defective lower at every k and by ≥ 5 pts at one; partly: lower at some k; "
          "not reproduced: never lower",
          ours_shuffle, verdict_shuffle),
    Claim("000", "000-T6-whitebox",
          "Random Mask can still improve defense performance under various kinds of white-box attack",
          "Section 3.2; Table 6",
          "CIFAR-10 ResNet-18: PGD2 24.26% → 42.35% / 49.30% (0.5 / 0.7-Shallow); PGD8 0.02% → 0.42% / 3.28%",
          "001-whitebox", ("whitebox_success_defense_rate[<standard>|<p-Bottom>][<attack>]",),
          "reproduced: defective ≥ standard on every (model, attack) (1 pt tolerance) and ≥ 5 pts on one; "
          "partly: higher on average; not reproduced: otherwise",
          ours_whitebox, verdict_whitebox),
    Claim("000", "000-T7-graybox",
          "CNNs with Random Mask have similar performance on adversarial examples generated by our two kinds of "
          "gray-box attacks",
          "Appendix F.4; Table 7",
          "CIFAR-10 ResNet-18, FGSM16: 0.5-Shallow 28.83% vs 0.5-ShallowDIF 28.91%; 0.7: 49.14% vs 48.23%",
          "001-whitebox", ("graybox_success_defense_rate[p-Bottom|p-Bottom_DIF][<source>]",),
          "reproduced: other-init and DIF defense rates within 5 pts; partly: within 10; not reproduced: further",
          ours_graybox_dif, verdict_graybox_dif),
    Claim("000", "000-speed",
          "The Random Mask in fact decreases the computational cost in each epoch since there are fewer effective "
          "connections",
          "Section 3.1",
          "no number in the seed (its code computes the dense convolution and masks it afterwards)",
          None, elsewhere="measured by the benchmarks, not by an experiment: benchmarks/RESULTS.md "
                          "(sparse vs dense conv timings by keep) and docs/training_speed.md (training steps)"),
    Claim("000", "000-humans",
          "the adversarial examples which can \u201cfool\u201d a CNN with Random Mask often \u201cfool\u201d "
          "humans as well",
          "Section 1; Figure 1, Figure 12",
          "CIFAR-10 / Tiny-ImageNet examples (no count)",
          None, elsewhere="needs a human study; every experiment writes adversarial_grid.png to look at, "
                          "no verdict is drawn from it"),
    Claim("000", "000-absolute",
          "Random Mask can help existing CNNs reach state-of-the-art performance against the black-box attacks we use",
          "Tables 1, 4, 5 (absolute CIFAR-10 / MNIST numbers)",
          "CIFAR-10 ResNet-18 90.30% PGD defense at 90.08% clean; MNIST transfer tables",
          None, elsewhere="the seed's CIFAR-10/MNIST scale is `--scale paper` (configs ready, not run here); "
                          "rows above test direction and rough size on Fashion-MNIST"),

    # ------------------------------------------------------------------ seed 001 (Defective CNN)
    Claim("001", "001-T1-shuffle",
          "the defective CNN performs consistently worse than standard CNN",
          "Section 3.2; Table 1",
          "ImageNet ResNet-18, k=2/4/8 patch shuffle: standard 99.53/84.36/20.08% vs defective 96.32/56.91/9.04%",
          "001-patch-shuffle", ("accuracy['Standard CNN'|'Defective CNN'][<k>x<k>]",),
          "reproduced: defective lower at every k and by ≥ 5 pts at one; partly: lower at some k; "
          "not reproduced: never lower",
          ours_shuffle, verdict_shuffle),
    Claim("001", "001-T2-headline",
          "Defective CNN achieves state-of-the-art results against two transfer-based black-box attacks",
          "Section 4.1; Table 2",
          "CIFAR-10 WRN-32-4, FGSM/PGD ε8: defective 86.24% / 88.43% vs standard 52.88% / 15.98%",
          _T, ("success_defense_rate[FGSM*|PGD*][<standard>|<0.1-Bottom>][<first source>]",),
          "reproduced: defective − standard ≥ 10 pts on PGD and > 0 on FGSM; partly: higher on one; "
          "not reproduced: not higher",
          ours_transfer_headline, verdict_transfer_headline),
    Claim("001", "001-T2-clean",
          "while maintaining high accuracy on clean test data",
          "Section 1; Table 2",
          "CIFAR-10 WRN-32-4: defective 91.12% vs standard 95.39% clean (−4.3 pts)",
          _T, ("clean_accuracy[<standard>|<0.1-Bottom>]",),
          "reproduced: clean accuracy drop ≤ 5 pts; partly: 5-10 pts; not reproduced: > 10 pts",
          ours_transfer_clean, verdict_clean),
    Claim("001", "001-T2-dropout",
          "SpatialDropout and DropBlock do not improve the robustness of standard CNNs",
          "Section 4.1.2; Table 2",
          "CIFAR-10 WRN-32-4, PGD: +SD 14.28%, +DB 12.71% vs standard 15.98%",
          _T, ("success_defense_rate[PGD*][<SpatialDropout row>|<DropBlock row>|<standard>][<first source>]",),
          "reproduced: no dropout baseline above standard by > 5 pts; partly: 5-10 pts; not reproduced: > 10 pts",
          ours_transfer_dropout, verdict_transfer_dropout),
    Claim("001", "001-T2-madry",
          "The results show the strengths of our proposed method on both robustness and generalization",
          "Section 4.1.2; Table 2",
          "CIFAR-10 WRN-32-4, PGD: defective 88.43% at 91.12% clean vs Madry 86.00% at 87.30%",
          _T, ("success_defense_rate[PGD*][<0.1-Bottom>|<Madry row>][<first source>]",
               "clean_accuracy[<0.1-Bottom>|<Madry row>]"),
          "reproduced: defective ≥ Madry (2 pt tolerance) on defense rate and clean accuracy; partly: on one",
          ours_transfer_madry, verdict_transfer_madry),
    Claim("001", "001-T3-archs",
          "defective convolutional layers consistently improve the robustness of various network architectures "
          "against transfer-based attacks",
          "Section 4.1.2; Table 3",
          "CIFAR-10, PGD16: ResNet-18 target 5.98% → 53.89% (0.5) / 78.23% (0.3) from ResNet-18, similar for "
          "5 archs x 5 sources",
          _T, ("success_defense_rate[PGD*][<standard>|<p-Bottom>][<each single source>]",),
          _RULE_CELLS, _ours_cells(ensemble=False), verdict_cells),
    Claim("001", "001-T5-ensemble-sources",
          "defective convolutional layers can consistently improve the black-box defense performance of various "
          "network architectures against transfer-based attacks from ensemble models",
          "Appendix A.2; Table 5",
          "CIFAR-10 PGD ε8 from 4-model ensembles: ResNet-18 1.02% → 32.98% (0.5) / 69.52% (0.3)",
          _T, ("success_defense_rate[PGD*][<standard>|<p-Bottom>]['Ensemble(…)']",),
          _RULE_CELLS, _ours_cells(ensemble=True), verdict_cells),
    Claim("001", "001-F4-keep-trend",
          "the defense accuracy monotonically increases as the test accuracy decreases along with the keep "
          "probability",
          "Section 4.2; Figure 4",
          "CIFAR-10 ResNet-18, PGD16 from DenseNet-121: 51.29% / 70.38% / 86.99% / 96.70% at keep 0.7/0.5/0.3/0.1 "
          "(clean 94.03 → 87.68%)",
          _A, ("success_defense_rate[p-Bottom][PGD*]", "clean_accuracy[p-Bottom]"),
          "reproduced: defense rate non-decreasing and clean accuracy non-increasing as keep falls (1 pt "
          "tolerance); partly: smallest keep defends better than largest; not reproduced: otherwise",
          ours_keep_trend, verdict_keep_trend),
    Claim("001", "001-T4-bottom-top",
          "applying defective layers to *bottom* layers enjoys significantly higher success defense rates",
          "Section 4.2; Table 4",
          "CIFAR-10 ResNet-18, PGD16 from DenseNet-121: 0.5-Bottom 70.38% vs 0.5-Top 11.06%; 0.3: 86.99% vs 11.77%",
          _A, ("success_defense_rate[p-Bottom|p-Top][PGD*]",),
          "reproduced: p-Bottom − p-Top ≥ 10 pts at every keep; partly: > 0 on average; not reproduced: otherwise",
          _ours_pairs(lambda p: f"{p:g}-Top", "bottom vs top"), verdict_bottom_minus_variant(0.10)),
    Claim("001", "001-T4-mixed",
          "only applying defective layers to bottom layers can achieve better performance than applying defective "
          "layers on both the bottom and top layers",
          "Section 4.2; Table 4",
          "CIFAR-10 ResNet-18, PGD16: 0.3-Bottom 86.99% vs 0.3-Bottom, 0.3-Top 75.49% / 0.3-Bottom, 0.7-Top 82.77%",
          _A, ("success_defense_rate['p-Bottom, q-Top'|p-Bottom][PGD*]",),
          "reproduced: p-Bottom − (p-Bottom, q-Top) ≥ 2 pts for every mixed row; partly: > 0 on average",
          ours_mixed, verdict_mixed),
    Claim("001", "001-T4-channel",
          "although our defective CNN suffers a … small drop in test accuracy due to the low keep probability, we "
          "have a great gain in the robustness, compared with the defective-channel CNN",
          "Section 4.2; Table 4",
          "CIFAR-10 ResNet-18, PGD16: 0.1-Bottom 96.70% vs 0.1-Bottom_DC 53.87%; 0.5: 70.38% vs 19.93%",
          _A, ("success_defense_rate[p-Bottom|p-Bottom_DC][PGD*]", "clean_accuracy"),
          "reproduced: p-Bottom − p-Bottom_DC ≥ 10 pts at every keep; partly: > 0 on average",
          _ours_pairs(lambda p: f"{p:g}-Bottom_DC", "neuron vs channel masks"), verdict_bottom_minus_variant(0.10)),
    Claim("001", "001-T4-same-mask",
          "applying the same mask to each channel will decrease the test accuracy",
          "Section 4.2; Table 4",
          "CIFAR-10 ResNet-18: 0.1-Bottom_SM 74.28% vs 0.1-Bottom 87.68% clean",
          _A, ("clean_accuracy[p-Bottom|p-Bottom_SM]", "success_defense_rate[...][PGD*]"),
          "reproduced: SM clean accuracy ≥ 2 pts lower at the smallest keep; partly: lower by less",
          _ours_pairs(lambda p: f"{p:g}-Bottom_SM", "independent vs shared masks"), verdict_sm),
    Claim("001", "001-T4-widen",
          "increasing channels does help the network with defective layers to obtain higher test accuracy while "
          "maintaining good robustness performance",
          "Section 4.2; Table 4",
          "CIFAR-10 ResNet-18: 0.1-Bottom×2 clean 90.49%, PGD16 93.35% vs 0.1-Bottom 87.68%, 96.70%",
          _A, ("clean_accuracy[p-Bottom|p-Bottom_x2]", "success_defense_rate[...][PGD*]"),
          "reproduced: ×n clean accuracy higher (≥ 0.5 pt) and defense rate within 10 pts; partly: one of the two",
          _ours_pairs(lambda p: f"{p:g}-Bottom_x2", "×2 channels"), verdict_widen),
    Claim("001", "001-T7-boundary",
          "Our proposed method achieves significant improvement over the standard CNN",
          "Appendix A.4; Table 7",
          "CIFAR-10 ResNet-18 (keep 0.1), Boundary attack: S(M) 3.5e-05 defective vs 7.3e-06 standard (4.8x)",
          "001-boundary", ("S(M)['Standard CNN'|'Defective CNN']",),
          "reproduced: defective S(M) ≥ 2x standard's; partly: > 1x; not reproduced: not larger",
          ours_boundary("Defective CNN"), verdict_boundary_defective),
    Claim("001", "001-T7-label-smoothing",
          "the gradient masking method does not increase the robustness against boundary attack",
          "Appendix A.4; Table 7",
          "CIFAR-10 ResNet-18: S(M) 6.8e-06 with label smoothing vs 7.3e-06 standard",
          "001-boundary", ("S(M)['Standard CNN'|'Standard CNN + LS']",),
          "reproduced: LS S(M) ≤ 1.5x standard's; partly: 1.5-2x; not reproduced: > 2x",
          ours_boundary("Standard CNN + LS"), verdict_boundary_ls),
    Claim("001", "001-F5-noise",
          "defective CNNs show far better robustness than the standard version",
          "Appendix A.5; Figure 5",
          "CIFAR-10 ResNet-18: curves only; standard drops sharply after σ = 8, 0.1-Bottom stays high until σ = 16",
          "001-gaussian", ("sigmas_255", "accuracy[<standard>|<0.1-Bottom>]", "n_images"),
          "reproduced: 0.1-Bottom − standard ≥ 10 pts at the largest σ ≤ 32; partly: > 0; not reproduced: ≤ 0",
          ours_gaussian_keep01, verdict_gaussian_keep01),
    Claim("001", "001-T8-whitebox",
          "defective convolutional layers can still improve defense performance under various kinds of white-box "
          "attack",
          "Appendix A.6; Table 8",
          "CIFAR-10 ResNet-18: PGD2 23.80% → 38.16% / 49.01% (0.5 / 0.3-Bottom); PGD8 0.02% → 0.12% / 2.86%",
          "001-whitebox", ("whitebox_success_defense_rate[<standard>|<p-Bottom>][<attack>]",),
          "reproduced: defective ≥ standard on every (model, attack) (1 pt tolerance) and ≥ 5 pts on one; "
          "partly: higher on average; not reproduced: otherwise",
          ours_whitebox, verdict_whitebox),
    Claim("001", "001-T9-graybox-dif",
          "defective CNNs have similar performance on adversarial examples generated by our two kinds of gray-box "
          "attacks",
          "Appendix A.7; Table 9",
          "CIFAR-10 ResNet-18, PGD16: 0.5-Bottom 30.90% vs 0.5-Bottom_DIF 32.77%; 0.3: 36.84% vs 37.04%",
          "001-whitebox", ("graybox_success_defense_rate[p-Bottom|p-Bottom_DIF][<source>]",),
          "reproduced: within 5 pts; partly: within 10; not reproduced: further apart",
          ours_graybox_dif, verdict_graybox_dif),
    Claim("001", "001-T10-graybox-vs-standard",
          "comparing with the gray-box performance of standard CNNs (See Table 10), defective CNNs show stronger "
          "defense ability",
          "Appendix A.7; Tables 9, 10",
          "CIFAR-10 PGD16, same structure other init: 0.5-Bottom 30.90%, 0.3-Bottom 36.84% vs ResNet-18 5.98%",
          ("001-whitebox", _T),
          ("001-whitebox: graybox_success_defense_rate[p-Bottom][p-Bottom]",
           "001-transfer: success_defense_rate[PGD*][<standard>][<first source>]"),
          "reproduced: every defective gray-box rate ≥ standard's + 10 pts; partly: all above; not reproduced: otherwise",
          ours_graybox_vs_standard, verdict_graybox_vs_standard),
    Claim("001", "001-AD-restarts",
          "With neither obfuscated gradient nor gradient masking, defective convolutional layers can still improve "
          "defense performance under various kinds of white-box attack",
          "Appendix A.6 (adaptive: white-box PGD with many restarts, not in the seed)",
          "the seed ran PGD without restarts only (Table 8)",
          "001-whitebox", ("adaptive_whitebox['success_defense_rate'][<standard>|<p-Bottom>]['adaptive']",),
          "holds: best defective − standard ≥ 5 pts under the restart attack; vanishes: ≤ 1 pt; partly between",
          ours_restarts, verdict_restarts, adaptive=True),
    Claim("001", "001-AD-graybox-same-masks",
          "achieves state-of-the-art performance against transfer-based attacks without applying any adversarial "
          "training",
          "Abstract (adaptive: transfer from a source with the target's own masks, another seed; not in the seed)",
          "the seed's gray-box sources had other masks or other inits (Table 9), never the same masks",
          _T, (f"success_defense_rate[PGD*][<p-Bottom>]['{GRAYBOX_COLUMN}']",
               "success_defense_rate[PGD*][<standard>][<first source>]"),
          "holds: gray-box defense rate ≥ standard's black-box rate + 10 pts; vanishes: ≤ + 2 pts; partly between",
          ours_graybox_transfer, verdict_graybox_transfer, adaptive=True),
    Claim("001", "001-AD-multi-surrogate",
          "Defective CNN has superior defense performance than standard CNN against … transfer-based attacks",
          "Section 1 (adaptive: seed 003's multi-surrogate attack with validation, not in seed 001)",
          "seed 001 transferred from single models and 4-model ensembles only",
          "003-multi-surrogate", ("transfer_rate['Standard'|<p-Bottom>]", "validated", "generated"),
          "holds: defective fooled ≥ 10 pts less often than standard; vanishes: ≤ 2 pts less; partly between",
          ours_multisurrogate_defective, verdict_multisurrogate_defective, adaptive=True),
    Claim("001", "001-semantic-shapes",
          "adversarial examples generated by the defective CNN appear to have semantic shapes",
          "Section 3.2; Figure 1, Appendix B",
          "CIFAR-10 / Tiny-ImageNet MI-FGSM examples (qualitative)",
          None, elsewhere="qualitative; adversarial_grid.png of each experiment shows MI-FGSM examples of the "
                          "defective model, no verdict is drawn from them"),
    Claim("001", "001-absolute",
          "Experimental results show that Defective CNN has superior defense performance than standard CNN",
          "Tables 2-15 (absolute CIFAR-10 / MNIST / ImageNet numbers)",
          "e.g. CIFAR-10 WRN-32-4 88.43% PGD defense at 91.12% clean; MNIST Table 6",
          None, elsewhere="the seed's datasets and architectures are `--scale paper` (configs ready, not run here)"),

    # ------------------------------------------------------------------ seed 002 (MAD)
    Claim("002", "002-T3-main",
          "the proposed method can effectively improve the defense abilities of the DNNs against all of the tested "
          "adversarial attack methods",
          "Abstract; Table 3",
          "LeNet/MNIST: e.g. PGD L∞ ε=0.015 11.64% → 70.90%, CW-L2 0.20% → 93.39% (gains 17-93 pts)",
          "002-mad", ("undefended[<attack>]", "rates['rate 0.75' or last][<attack>]"),
          "reproduced: MAD ≥ undefended + 10 pts on every attack; partly: higher on most; not reproduced: otherwise",
          ours_mad_main, verdict_mad_main),
    Claim("002", "002-T2-rate",
          "higher masking percentage makes better defense but lower accuracy on benign inputs",
          "Section 4; Table 2",
          "VGG16/CIFAR-10: benign 85.31% (1/3) → 76.14% (4/5); FGSM L1 ε=15 70.17% → 85.30%",
          "002-mad", ("rates[<rate r>]['Benign'|<attack>]", "undefended"),
          "reproduced: mean attacked accuracy rises and benign falls with the rate (1 pt tolerance); partly: one trend",
          ours_mad_rates, verdict_mad_rates),
    Claim("002", "002-T4-grid",
          "using a larger grid in the test phase produces a better classification accuracy on benign … images, and a "
          "smaller grid produces a better defense",
          "Section 4; Table 4",
          "VGG16/CIFAR-10, train 8×8: test 2×2/4×4/8×8 benign 63.11/82.65/82.89%, FGSM L1 ε=15 85.34/82.63/75.68%",
          "002-mad", ("grid_sizes['<g>x<g> / <t>x<t>']['Benign'|<attack>]", "undefended"),
          "reproduced: both trends for every train grid; partly: one",
          ours_mad_grids, verdict_mad_grids),
    Claim("002", "002-T3-cw",
          "Of all the attacks, CW [Carlini and Wagner, 2017] is the most successfully defended method by MAD",
          "Section 4; Table 3",
          "LeNet/MNIST CW-L2: 0.20% → 93.39% (+93.19 pts, the largest gain)",
          "002-mad", ("undefended['CW…']", "rates['rate 0.75'][<attack>]"),
          "reproduced: CW has the largest MAD gain; partly: in the top half; not reproduced: lower",
          ours_mad_cw, verdict_mad_cw),
    Claim("002", "002-AD-eot",
          "our method promotes the robustness of a DNN by randomly masking a portion of potential adversarial images",
          "Abstract (adaptive: EOT-PGD through the voting wrapper, not in the seed)",
          "the seed attacked the MAD model without its test-time masking",
          "002-mad", ("rates['rate 0.75'][config.adaptive.label]", "undefended[<matching PGD>]", "config.adaptive"),
          "holds: MAD under EOT-PGD ≥ undefended model under the same PGD + 20 pts; vanishes: ≤ + 5 pts",
          ours_mad_eot, verdict_mad_eot, adaptive=True),
    Claim("002", "002-T5-baselines",
          "MAD outperforms these state-of-the-art defense approaches in most cases",
          "Section 4; Table 5",
          "VGG16/CIFAR-10 vs MagNet, denoised smoothing, Parseval networks, PCL",
          None, elsewhere="no experiment implements MagNet, denoised smoothing, Parseval networks or PCL"),
    Claim("002", "002-absolute",
          "the DNN models trained with MAD have improved classification accuracy by as much as 90%",
          "Abstract; Table 3 (MNIST / CIFAR-10 / SVHN)",
          "up to +93.19 pts (CW-L2, LeNet/MNIST)",
          None, elsewhere="the seed's datasets are `--scale paper`; 002-T3-main tests direction and size on Fashion-MNIST"),

    # ------------------------------------------------------------------ seed 003 (Random Spiking)
    Claim("003", "003-T4-rs-single",
          "adversarial examples generated by RS-1 and RS-1-Dropout have either higher or comparable amount of "
          "distortion",
          "Section 5.2; Table 4",
          "Fashion-MNIST C&W MNIST CNN, targeted C&W-L2: RS-1 0.31 ± 0.16 vs Standard 0.12 ± 0.08",
          "003-cw-distance", ("single['Standard'|'RS-1 …']['mean'|'std'|'success_rate']",),
          "reproduced: RS-1 mean L2 ≥ 1.5x standard's; partly: 0.9-1.5x (comparable); not reproduced: < 0.9x",
          _ours_cw("single"), verdict_cw),
    Claim("003", "003-T5-rs-multi",
          "These again suggest RS offers additional protection against adversarial examples",
          "Section 5.2; Table 5 (multi-8 attack)",
          "Fashion-MNIST, multi-8 C&W-L2: RS-1 0.54 ± 0.25 vs Standard 0.22 ± 0.15",
          "003-cw-distance", ("multi_<n>['Standard'|'RS-1 …']['mean']",),
          "reproduced: RS-1 mean L2 ≥ 1.5x standard's; partly: 0.9-1.5x; not reproduced: < 0.9x",
          _ours_cw("multi"), verdict_cw),
    Claim("003", "003-F1-noise",
          "RS-1 and RSD-1 have slightly higher stability than others",
          "Section 5.3.1; Figure 1 (Fashion-MNIST)",
          "Fashion-MNIST, L2 = 2.5 Gaussian noise: ~60% stability for non-adversarially-trained schemes, RS-1 slightly above",
          "003-stability", ("noise_stability['Standard'|'RS-1 …']", "l2_levels"),
          "reproduced: RS-1 − standard ≥ 1 pt at the largest L2; partly: higher there or on average; "
          "not reproduced: otherwise",
          _ours_stability("noise_stability", "l2_levels", "last"), verdict_stability(0.01)),
    Claim("003", "003-F2-jpeg",
          "RS-1-ADV, RSD-1, and RS-1 outperform other schemes on the stability as the JCQ decreases",
          "Section 5.3.2; Figure 2 (Fashion-MNIST)",
          "Fashion-MNIST, JPEG quality 10: RS-1 84.4% vs others ≤ 80%",
          "003-stability", ("jpeg_stability['Standard'|'RS-1 …']", "jpeg_qualities"),
          "reproduced: RS-1 − standard ≥ 3 pts at the lowest quality; partly: higher there or on average",
          _ours_stability("jpeg_stability", "jpeg_qualities", "first"), verdict_stability(0.03)),
    Claim("003", "003-F4-translucent",
          "Examining the columns for Standard and Dropout, we can see that Standard and Dropout are in general most "
          "vulnerable",
          "Section 5.5; Figure 4 (multi-8 & passing 5/7 validation)",
          "heat map of passing rates (no table); RS-1 and RS-1-Dropout \u201cperform consistently well\u201d",
          "003-multi-surrogate", ("transfer_rate['Standard'|'RS-1 …']", "validated", "generated"),
          "reproduced: RS-1 fooled ≥ 10 pts less often than standard; partly: less often; not reproduced: not less",
          ours_translucent, verdict_translucent),
    Claim("003", "003-AD-eot",
          "Evaluations under our proposed framework suggest RS delivers better protection against adversarial "
          "examples than many existing schemes",
          "Abstract (adaptive: EOT-PGD against RS MC/vote inference, not in the seed)",
          "the seed's white-box C&W ran without EOT",
          "003-cw-distance", ("adaptive_spiking['accuracy'][<RS-1 MC/vote row>]['adaptive'|'reference']",),
          "holds: the best RS-1 inference's accuracy under EOT-PGD ≥ the standard model's under the same PGD "
          "white-box + 20 pts; vanishes: ≤ + 5 pts; partly between",
          ours_rs_eot, verdict_rs_eot, adaptive=True),
    Claim("003", "003-F3-strategies",
          "… that passed the 5/7 Validation are significantly more likely to transfer to the "
          "target model, even when the amount of perturbation is small",
          "Section 5.4; Figure 3",
          "curves only: Multi 8 & Passing 5/7 above Multi 8 above Single at every L2",
          None, elsewhere="003-multi-surrogate runs the validated strategy only; Single and Multi-8-without-"
                          "validation are not run, so the comparison is not made"),
    Claim("003", "003-absolute",
          "RS-1-Adv results in models that are more difficult to attack",
          "Tables 2, 4, 5; Figures 1-4 (MNIST / CIFAR-10, adversarially trained variants)",
          "e.g. Fashion-MNIST RS-1-Adv 0.56 ± 0.30 single-model C&W L2",
          None, elsewhere="RS-1-Adv, RS-1-Dropout, MagNet, distillation and region-based classification are not in "
                          "the 003 experiments; MNIST/CIFAR-10 are `--scale paper`"),

    # ------------------------------------------------------------------ seed 004 (randomization)
    Claim("004", "004-T1-clean",
          "randomization layers introduce negligible performance degradation on clean images",
          "Section 4.2; Table 1",
          "ImageNet 5000 images: 100% → 97.3% (Inception-v3) … 99.3% (Inception-ResNet-v2)",
          "004-randomization", ("accuracy['plain_clean']", "accuracy['resize_pad']['clean']"),
          "reproduced: drop ≤ 3 pts; partly: 3-10 pts; not reproduced: > 10 pts",
          ours_rand_clean, verdict_rand_clean),
    Claim("004", "004-T2-vanilla",
          "randomization can mitigate the adversarial effects of both single-step and iterative attacks significantly",
          "Section 4.3; Table 2",
          "Inception-v3 vanilla: FGSM-10 33.0% → 52.4%, DeepFool 0% → 98.3%, C&W 0% → 96.9%",
          "004-randomization", ("accuracy['resize_pad']['plain_model_vanilla'|'vanilla'][<attack>]",),
          "reproduced: gain ≥ 10 pts on every attack; partly: positive on average; not reproduced: otherwise",
          _ours_scenario("resize_pad", "vanilla"), verdict_rand_gain),
    Claim("004", "004-T2-iterative",
          "As for iterative attacks, they always reach a very high attack rate on target model, but have almost no "
          "impact on models after randomization layers are applied",
          "Section 4.3; Table 2",
          "Inception-v3: DeepFool 98.3%, C&W 96.9% with randomization (clean 97.3%)",
          "004-randomization", ("accuracy['resize_pad']['vanilla'|'clean'][DeepFool|CW*]",),
          "reproduced: iterative accuracy within 10 pts of clean and ≥ 20 pts above the plain model; partly: gain "
          "≥ 20 pts only; not reproduced: otherwise",
          _ours_scenario("resize_pad", "vanilla"), verdict_rand_iterative),
    Claim("004", "004-T2-fgsm-eps",
          "As for single-step attacks FGSM-ε, larger ε indicates stronger transferability, thus making it harder "
          "to defend",
          "Section 4.3; Table 2",
          "Inception-v3 with randomization: FGSM-2/5/10 65.1% / 54.5% / 52.4%",
          "004-randomization", ("accuracy['resize_pad']['vanilla'][FGSM<ε>]",),
          "reproduced: accuracy non-increasing in ε; partly: largest ε worse than smallest",
          ours_fgsm_eps, verdict_fgsm_eps),
    Claim("004", "004-T3-single",
          "similar results to vanilla attack are observed",
          "Section 4.4; Table 3 (single-pattern attack)",
          "Inception-v3 single-pattern: FGSM-10 34.7% → 51.8%, DeepFool 1.1% → 98.2%, C&W 1.1% → 97.4%",
          "004-randomization", ("accuracy['resize_pad']['plain_model_vanilla'|'single'][<attack>]",),
          "reproduced: gain ≥ 10 pts on every attack; partly: positive on average",
          _ours_scenario("resize_pad", "single"), verdict_rand_gain),
    Claim("004", "004-T4-ensemble",
          "randomization layers increase the accuracy under all attacks and network models",
          "Section 4.5; Table 4 (ensemble-pattern attack)",
          "Inception-v3 ensemble-pattern: FGSM-10 30.4% → 32.8%, DeepFool 0.6% → 81.3%, C&W 0.6% → 62.9%",
          "004-randomization", ("accuracy['resize_pad']['plain_model_vanilla'|'ensemble'][<attack>]",),
          "reproduced: gain > 0 on every attack and ≥ 10 pts on average; partly: positive on average",
          _ours_scenario("resize_pad", "ensemble"), verdict_rand_ensemble),
    Claim("004", "004-T4-stronger",
          "we can see that ensemble-pattern attack constructs much stronger adversarial examples",
          "Section 4.5; Table 4 vs Table 2",
          "Inception-v3 defended: DeepFool 98.3% (vanilla) → 81.3% (ensemble), C&W 96.9% → 62.9%",
          "004-randomization", ("accuracy['resize_pad']['vanilla'|'ensemble'][<attack>]",),
          "reproduced: ensemble-pattern accuracy ≥ 5 pts below vanilla on average; partly: below; "
          "not reproduced: not below",
          _ours_scenario("resize_pad", "ensemble"), verdict_rand_stronger),
    Claim("004", "004-T5-one-pixel-pad",
          "creating different padding patterns (even 1-pixel padding) can effectively mitigate adversarial effects",
          "Section 4.6.1; Table 5",
          "Inception-v3: DeepFool 0.9% → 97.2%, C&W 0.8% → 70.2%, FGSM-10 34.5% → 38.8%",
          "004-randomization", ("accuracy['one_pixel_pad']['plain_model_vanilla'|'vanilla'][<attack>]",),
          "reproduced: iterative gains ≥ 20 pts and single-step gains > 0 (vanilla examples); partly: gain on average",
          _ours_scenario("one_pixel_pad", "vanilla"), verdict_rand_pixel),
    Claim("004", "004-T6-one-pixel-resize",
          "resizing image to a different scale (even 1-pixel scale) can effectively mitigate adversarial effects",
          "Section 4.6.2; Table 6",
          "Inception-v3: FGSM-2 30.8% → 56.2%; DeepFool / C&W near clean accuracy",
          "004-randomization", ("accuracy['one_pixel_resize']['plain_model_vanilla'|'vanilla'][<attack>]",),
          "reproduced: iterative gains ≥ 20 pts and single-step gains > 0 (vanilla examples); partly: gain on average",
          _ours_scenario("one_pixel_resize", "vanilla"), verdict_rand_pixel),
    Claim("004", "004-AD-eot",
          "Extensive experiments demonstrate that the proposed randomization method is very effective at defending "
          "against both single-step and iterative attacks",
          "Abstract (adaptive: EOT over random patterns, Athalye et al.; not in the seed)",
          "the seed's strongest attack was the 21-pattern ensemble (Table 4)",
          "004-randomization", ("accuracy['resize_pad']['plain_model_vanilla'|'eot'][<attack>]",),
          "holds: EOT accuracy ≥ the plain model's white-box accuracy + 20 pts on average; vanishes: ≤ + 5 pts",
          ours_rand_eot, verdict_rand_eot, adaptive=True),
    Claim("004", "004-compute",
          "Very few computations are required by adding the two randomization layers, thus there is nearly no run "
          "time increase",
          "Section 1",
          "no number",
          None, elsewhere="not timed by any experiment or benchmark"),
    Claim("004", "004-absolute",
          "it achieves a normalized score of 0.924 (ranked No.2 among 110 defense teams)",
          "Abstract; Section 5 (NIPS 2017 challenge, ImageNet)",
          "0.924 with ens-adv-Inception-ResNet-v2 vs 0.773 adversarial training alone",
          None, elsewhere="ImageNet-scale challenge; not reproducible here (the 004 experiment uses Fashion-MNIST)"),
]


def _check_catalogue() -> None:
    ids = [c.id for c in CLAIMS]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise AssertionError(f"duplicate claim ids: {sorted(dup)}")
    for c in CLAIMS:
        if c.experiment is not None and (c.ours is None or c.verdict is None):
            raise AssertionError(f"claim {c.id} names an experiment but has no ours/verdict")


_check_catalogue()
