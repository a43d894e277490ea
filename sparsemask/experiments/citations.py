"""The seed papers the experiments reproduce, by title and authors: the one place the CLI
listing (``sparsemask experiment --list``), each experiment's results.md header and the README
take them from.

Where our copy of a seed (``shared/seeds/``) lacks its title or authors (000 and 003 begin at
the abstract; 001 is the anonymous double-blind version), they were established from public
pages whose abstract is word for word the one in our copy; ``evidence`` says which.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

__all__ = ["Citation", "SEEDS", "seed_of", "cite", "seed_list"]


class Citation(NamedTuple):
    title: str
    authors: str
    venue: str
    evidence: str

    def __str__(self) -> str:
        return f"{self.authors}. {self.title}." + (f" {self.venue}." if self.venue else "")


SEEDS: dict[str, Citation] = {
    "000": Citation(
        title="Random Mask: Towards Robust Convolutional Neural Networks",
        authors="Tiange Luo, Tianle Cai, Mengxiao Zhang, Siyu Chen, Liwei Wang",
        venue="ICLR 2019 submission, OpenReview SkgkJn05YX; arXiv:2007.14249; an earlier version of seed 001",
        evidence="our copy starts at the abstract; title and authors from arXiv 2007.14249 (ar5iv), whose "
                 "abstract is our copy's word for word, and the OpenReview page of the ICLR 2019 submission"),
    "001": Citation(
        title="Defective Convolutional Layers Learn Robust CNNs",
        authors="Tiange Luo, Tianle Cai, Mengxiao Zhang, Siyu Chen, Di He, Liwei Wang",
        venue="arXiv:1911.08432 v1; later versions are titled \"Defective Convolutional Networks\"",
        evidence="title in our copy (\"Anonymous authors\", under double-blind review); authors from the arXiv "
                 "1911.08432 listings (deepai: this title and our abstract, Nov 2019, Tiange Luo et al.; "
                 "paperswithcode: the author list)"),
    "002": Citation(
        title="A Mask-Based Adversarial Defense Scheme",
        authors="Weizhen Xu, Chenyi Zhang, Fangzhen Zhao, Liangda Fang",
        venue="",  # our copy names no venue (authors at Jinan University)
        evidence="title and authors in our copy"),
    "003": Citation(
        title="Random Spiking and Systematic Evaluation of Defenses Against Adversarial Examples",
        authors="Huangyi Ge, Sze Yiu Chau, Bruno Ribeiro, Ninghui Li",
        venue="ACM CODASPY 2020; arXiv:1812.01804",
        evidence="our copy starts at the abstract; title, authors and venue from arXiv 1812.01804 (ar5iv), "
                 "whose abstract and CCS concepts are our copy's word for word"),
    "004": Citation(
        title="Mitigating Adversarial Effects Through Randomization",
        authors="Cihang Xie, Jianyu Wang, Zhishuai Zhang, Zhou Ren, Alan L. Yuille",
        venue="ICLR 2018",
        evidence="title and authors in our copy; author order and venue from the authors' citation in "
                 "github.com/cihangxie/NIPS2017_adv_challenge_defense"),
}


def seed_of(experiment: str) -> Optional[str]:
    """The seed id an experiment reproduces, from its name (``"001-transfer"`` -> ``"001"``);
    None for experiments of no seed (``demo``, user-registered ones)."""
    head = experiment.split("-", 1)[0]
    return head if head in SEEDS else None


def cite(seed: str, short: bool = False) -> str:
    """``Authors. *Title*. Venue.`` (markdown); ``short``: ``Title (First author et al.)``."""
    c = SEEDS[seed]
    if short:
        first = c.authors.split(",")[0].strip()
        return f"{c.title} ({first}{' et al.' if ',' in c.authors else ''})"
    return f"{c.authors}. *{c.title}*." + (f" {c.venue}." if c.venue else "")


def seed_list(markdown: bool = False) -> str:
    """Every seed, one line each (``seed 001: Title — Authors (venue)``; ``markdown``: a bullet list
    of :func:`cite`), for ``--list`` and docs."""
    if markdown:
        return "\n".join(f"- seed {sid}: {cite(sid)}" for sid in SEEDS)
    return "\n".join(f"seed {sid}: {c.title} — {c.authors}" + (f" ({c.venue})" if c.venue else "")
                     for sid, c in SEEDS.items())
