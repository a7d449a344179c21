"""Behavioural tests for mrcnn_plugin.modeling.sampling.subsample_labels."""
import torch

from mrcnn_plugin.modeling.sampling import subsample_labels


def _labels(num_pos, num_neg, num_ignore, bg_label=0, fg_label=1, seed=0):
    labels = torch.tensor([fg_label] * num_pos + [bg_label] * num_neg + [-1] * num_ignore)
    g = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(len(labels), generator=g)]


def _check_disjoint_and_correct(labels, pos, neg, bg_label):
    assert len(set(pos.tolist()) & set(neg.tolist())) == 0
    assert len(set(pos.tolist())) == pos.numel() and len(set(neg.tolist())) == neg.numel()
    assert ((labels[pos] != -1) & (labels[pos] != bg_label)).all()
    assert (labels[neg] == bg_label).all()


def test_counts_respect_num_samples_and_fraction():
    """With plenty of both, exactly num_samples * fraction positives and the rest negatives."""
    labels = _labels(100, 300, 50)
    torch.manual_seed(0)
    pos, neg = subsample_labels(labels, num_samples=64, positive_fraction=0.25, bg_label=0)
    assert pos.numel() == 16 and neg.numel() == 48
    _check_disjoint_and_correct(labels, pos, neg, 0)


def test_fills_with_negatives_when_positives_scarce():
    """With 3 positives and a budget of 32 at fraction 0.5, all 3 are taken and 29 negatives fill."""
    labels = _labels(3, 100, 10)
    pos, neg = subsample_labels(labels, num_samples=32, positive_fraction=0.5, bg_label=0)
    assert pos.numel() == 3 and neg.numel() == 29
    assert sorted(pos.tolist()) == sorted((labels == 1).nonzero().squeeze(1).tolist())
    _check_disjoint_and_correct(labels, pos, neg, 0)


def test_too_few_of_both():
    """With fewer labelled samples than the budget, everything labelled is returned and ignored never is."""
    labels = _labels(2, 5, 20)
    pos, neg = subsample_labels(labels, num_samples=256, positive_fraction=0.5, bg_label=0)
    assert pos.numel() == 2 and neg.numel() == 5
    _check_disjoint_and_correct(labels, pos, neg, 0)
    assert (labels[torch.cat([pos, neg])] != -1).all()


def test_many_foreground_classes_and_bg_label():
    """With ROI-head labels (classes 0..K-1 foreground, K background), fg means any class != bg and != -1."""
    bg = 5
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 5, 5, 5, -1, 0, 2])
    torch.manual_seed(1)
    pos, neg = subsample_labels(labels, num_samples=8, positive_fraction=0.25, bg_label=bg)
    assert pos.numel() == 2 and neg.numel() == 4  # 4 negatives exist; 8 - 2 = 6 wanted
    _check_disjoint_and_correct(labels, pos, neg, bg)


def test_total_never_exceeds_num_samples():
    """P + Q <= num_samples across fractions and label mixes."""
    for num_pos, num_neg in [(0, 10), (10, 0), (50, 50), (7, 3)]:
        labels = _labels(num_pos, num_neg, 5)
        for frac in (0.0, 0.25, 0.5, 1.0):
            pos, neg = subsample_labels(labels, num_samples=8, positive_fraction=frac, bg_label=0)
            assert pos.numel() + neg.numel() <= 8
            assert pos.numel() <= int(8 * frac)
            _check_disjoint_and_correct(labels, pos, neg, 0)


def test_never_picks_ignored():
    """Only ignored labels -> nothing sampled."""
    labels = torch.full((20,), -1)
    pos, neg = subsample_labels(labels, 10, 0.5, 0)
    assert pos.numel() == 0 and neg.numel() == 0


def test_deterministic_under_manual_seed():
    """The same seed gives the same sample; a different seed (very likely) a different one."""
    labels = _labels(200, 400, 0)
    torch.manual_seed(123)
    p1, n1 = subsample_labels(labels, 64, 0.5, 0)
    torch.manual_seed(123)
    p2, n2 = subsample_labels(labels, 64, 0.5, 0)
    assert torch.equal(p1, p2) and torch.equal(n1, n2)
    torch.manual_seed(124)
    p3, n3 = subsample_labels(labels, 64, 0.5, 0)
    assert not (torch.equal(p1, p3) and torch.equal(n1, n3))


def test_random_subset_not_just_first():
    """Sampling draws from all candidates (not just the first ones in index order)."""
    labels = torch.tensor([1] * 100 + [0] * 100)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        pos, _ = subsample_labels(labels, 10, 0.5, 0)
        seen.update(pos.tolist())
    assert max(seen) >= 50


def test_empty_input():
    """Empty labels give two empty index tensors."""
    pos, neg = subsample_labels(torch.zeros(0, dtype=torch.int64), 256, 0.5, 0)
    assert pos.shape == (0,) and neg.shape == (0,)
    assert pos.dtype == torch.int64 and neg.dtype == torch.int64
