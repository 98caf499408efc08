"""PNG plots of a run: t-SNE maps of embeddings coloured by class.

Matplotlib runs headless (the Agg backend); every function writes one PNG (rendered in memory,
then written through `tf.io.gfile`, so any run directory works) and closes its figure.
"""

import numpy as np

from supcon_tf import filesystem


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tsne_points(features, seed=0):
    """2-D t-SNE coordinates of L2-normalised features.

    Args:
        features: float `[N, F]` embeddings, N >= 5.
        seed: Python int, seeds t-SNE.

    Returns:
        numpy float `[N, 2]`.
    """
    from sklearn.manifold import TSNE

    from supcon_tf.evaluation import features as features_lib

    features = features_lib.l2_normalize(features)
    perplexity = min(30.0, (len(features) - 1) / 3.0)
    return TSNE(n_components=2, init="pca", random_state=seed,
                perplexity=perplexity).fit_transform(features)


def save_tsne(path, panels, seed=0):
    """One t-SNE map per panel, side by side, points coloured by class, to a PNG.

    Args:
        path: the PNG to write.
        panels: dict title -> (features float `[N, F]`, labels int `[N]`), N >= 5.
        seed: Python int, seeds t-SNE.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.2, 5),
                                squeeze=False)
    classes = np.unique(np.concatenate([np.asarray(labels) for _, labels in panels.values()]))
    few = len(classes) <= 20
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if few else "turbo")
    for axis, (title, (features, labels)) in zip(axes[0], panels.items()):
        points, labels = tsne_points(features, seed), np.asarray(labels)
        for index, label in enumerate(classes):
            chosen = labels == label
            colour = colours(index if few else index / max(len(classes) - 1, 1))
            axis.scatter(points[chosen, 0], points[chosen, 1], s=7, color=colour,
                         label=str(label))
        axis.set_title(title, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    if few:
        axes[0][-1].legend(title="class", fontsize=7, markerscale=2, loc="center left",
                           bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    filesystem.write_figure(figure, path, dpi=100)
    plt.close(figure)


def save_curves(path, panels, xlabel="epoch"):
    """Line plots, one panel per entry, side by side, to a PNG.

    Args:
        path: the PNG to write.
        panels: dict title -> (y-axis label, dict series name -> (x values, y values)).
        xlabel: label of every x axis.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for axis, (title, (ylabel, series)) in zip(axes[0], panels.items()):
        for name, (xs, ys) in series.items():
            axis.plot(xs, ys, marker="o", markersize=3, label=name)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        if len(series) > 1:
            axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    filesystem.write_figure(figure, path, dpi=100)
    plt.close(figure)
