"""Naive numpy references for the losses, written from the definitions in reference/losses.md.

Explicit Python loops over anchors, positives and negatives, in float64; nothing shared with
`supcon_tf.losses`. Kept in its own file (numpy only) so the JAX-backend test can load it too.
"""

import math

import numpy as np


def _class_ids(labels, batch):
    if labels is None:
        return list(range(batch))
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return [int(np.argmax(row)) for row in labels]
    return [int(x) for x in labels.reshape(-1)]


def jaccard(set_a, set_b):
    """|A & B| / |A | B| of two 0/1 rows, as Python sets; 0 when both are empty."""
    a, b = set(np.flatnonzero(set_a).tolist()), set(np.flatnonzero(set_b).tolist())
    return len(a & b) / len(a | b) if a | b else 0.0


def _labels_of(labels, batch):
    """One label per sample: an int class id, or (label sets, >1 column) a 0/1 row."""
    if labels is None:
        return list(range(batch))
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return list(labels)
    return [int(x) for x in labels.reshape(-1)]


def _pair_weight(a, b):
    """The positive weight of two labels: 1 / 0 for class ids, Jaccard for label sets."""
    return float(a == b) if np.ndim(a) == 0 else jaccard(a, b)


def supcon(features, labels=None, temperature=0.1, contrast_mode="all_views",
           summation="outside", denominator="all", positives_cap=-1,
           scale_by_temperature=True, memory_features=None, memory_labels=None):
    """Per-sample SupCon loss, one anchor and one pair at a time.

    Each pair has a positive weight: 1 for the anchor's own other views, then 1 / 0 for the
    same / another class id, or for label sets (multi-hot rows, multi-label SupCon) the
    Jaccard similarity of the two sets. Positives are the pairs of weight > 0 (the first
    `positives_cap // views` other samples, with a cap), negatives those of weight 0. L_out is
    -sum_p w_p log r_p / sum_p w_p and L_in -log(sum_p w_p r_p / sum_p w_p), r_p the softmax
    ratio of the chosen denominator (weights of 1: the plain mean).

    Memory keys (label -1, or a row with a -1, = empty slot, skipped) join A(i); with labels a
    key is weighted like a sample, without labels every filled key is a negative.
    """
    z = np.asarray(features, np.float64)
    batch, views = z.shape[:2]
    z = z.reshape(batch, views, -1)
    y = _labels_of(labels, batch)
    keys = [] if memory_features is None else [
        (np.asarray(k, np.float64), np.asarray(c)) for k, c in zip(memory_features, memory_labels)
        if np.all(np.asarray(c) >= 0)]
    anchor_views = range(views) if contrast_mode == "all_views" else [0]
    out = np.zeros(batch)
    for i in range(batch):
        per_view = []
        for v in anchor_views:
            def logit(item):
                if item[0] == "key":
                    return float(z[i, v] @ keys[item[1]][0]) / temperature
                return float(z[i, v] @ z[item[0], item[1]]) / temperature

            weight = {j: _pair_weight(y[i], y[j]) for j in range(batch) if j != i}
            sharing = [j for j in range(batch) if j != i and weight[j] > 0]
            kept = sharing if positives_cap < 0 else sharing[:positives_cap // views]
            positives = [((i, u), 1.0) for u in range(views) if u != v]
            positives += [((j, u), weight[j]) for j in kept for u in range(views)]
            negatives = [(j, u) for j in range(batch) if j != i and weight[j] == 0
                         for u in range(views)]
            for k, (_, key_label) in enumerate(keys):
                key_weight = 0.0 if labels is None else _pair_weight(y[i], key_label)
                if key_weight > 0:
                    positives.append((("key", k), key_weight))
                else:
                    negatives.append(("key", k))
            everything = [p for p, _ in positives] + negatives  # A(i): no self, no capped-away
            if not positives or (denominator == "only_negatives" and not negatives):
                per_view.append(0.0)
                continue
            weighted_ratios = []
            for p, w in positives:
                if denominator == "all":
                    den = sum(math.exp(logit(a)) for a in everything)
                elif denominator == "only_negatives":
                    den = sum(math.exp(logit(n)) for n in negatives)
                else:  # one_positive
                    den = math.exp(logit(p)) + sum(math.exp(logit(n)) for n in negatives)
                weighted_ratios.append((w, math.exp(logit(p)) / den))
            total = sum(w for w, _ in weighted_ratios)
            if summation == "outside":
                loss = -sum(w * math.log(r) for w, r in weighted_ratios) / total
            else:
                loss = -math.log(sum(w * r for w, r in weighted_ratios) / total)
            per_view.append(loss * (temperature if scale_by_temperature else 1.0))
        out[i] = sum(per_view) / len(per_view)
    return out


def simclr_nt_xent(features, temperature):
    """SimCLR's own formulation: two views, sum over both directions, mean over the batch."""
    z = np.asarray(features, np.float64)
    batch = z.shape[0]
    items = [(j, u) for u in range(2) for j in range(batch)]
    total = 0.0
    for i in range(batch):
        for v in range(2):
            num = math.exp(z[i, v] @ z[i, 1 - v] / temperature)
            den = sum(math.exp(z[i, v] @ z[j, u] / temperature)
                      for (j, u) in items if (j, u) != (i, v))
            total += -math.log(num / den)
    return total / batch


def cross_entropy(labels, logits, label_smoothing):
    logits = np.asarray(logits, np.float64)
    batch, classes = logits.shape
    y = _class_ids(labels, batch)
    out = np.zeros(batch)
    for i in range(batch):
        log_norm = math.log(sum(math.exp(x) for x in logits[i]))
        for k in range(classes):
            target = (1 - label_smoothing) * (k == y[i]) + label_smoothing / classes
            out[i] -= target * (logits[i, k] - log_norm)
    return out


def n_pairs(features, labels, l2_penalty):
    f = np.asarray(features, np.float64)
    batch = f.shape[0]
    y = _class_ids(labels, batch)
    out = np.zeros(batch)
    for i in range(batch):
        s = sum(math.exp(f[i, 0] @ f[j, 1] - f[i, 0] @ f[i, 1])
                for j in range(batch) if y[j] != y[i])
        out[i] = math.log(1 + s) + l2_penalty * (f[i, 0] @ f[i, 0] + f[i, 1] @ f[i, 1])
    return out


def _items(z):
    batch, views = z.shape[:2]
    return [(j, u) for j in range(batch) for u in range(views)]


def triplet(features, labels, margin, mining):
    z = np.asarray(features, np.float64)
    batch, views = z.shape[:2]
    y = _class_ids(labels, batch)
    items = _items(z)
    out = np.zeros(batch)
    for i in range(batch):
        for v in range(views):
            def d(item):
                diff = z[i, v] - z[item[0], item[1]]
                return float(diff @ diff)

            pos = [it for it in items if y[it[0]] == y[i] and it != (i, v)]
            neg = [it for it in items if y[it[0]] != y[i]]
            if not pos or not neg:
                continue
            if mining == "batch_hard":
                loss = max(0.0, max(d(p) for p in pos) - min(d(n) for n in neg) + margin)
            else:
                losses = []
                for p in pos:
                    farther = [d(n) for n in neg if d(n) > d(p)]
                    dn = min(farther) if farther else max(d(n) for n in neg)
                    losses.append(max(0.0, d(p) - dn + margin))
                loss = sum(losses) / len(losses)
            out[i] += loss / views
    return out


def max_margin(features, labels, margin):
    z = np.asarray(features, np.float64)
    batch, views = z.shape[:2]
    y = _class_ids(labels, batch)
    items = _items(z)
    out = np.zeros(batch)
    for i in range(batch):
        for v in range(views):
            pair_losses = []
            for it in items:
                if it == (i, v):
                    continue
                dist = float(np.linalg.norm(z[i, v] - z[it[0], it[1]]))
                if y[it[0]] == y[i]:
                    pair_losses.append(0.5 * dist ** 2)
                else:
                    pair_losses.append(0.5 * max(0.0, margin - dist) ** 2)
            out[i] += sum(pair_losses) / len(pair_losses) / views
    return out

