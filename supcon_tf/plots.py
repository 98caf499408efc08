"""PNG plots of a run: t-SNE maps of embeddings coloured by class, training curves, retrieval
examples.

Matplotlib runs headless (the Agg backend; the retrieval examples are drawn with PIL); every
function writes one PNG (rendered in memory, then written through `tf.io.gfile`, so any run
directory works) and closes its figure.
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


# Layout of `save_retrieval_examples`: frame colours, image side, frame width, margin, caption
# height, gap between the query and its results, gap between results (pixels).
QUERY_COLOUR, RIGHT_COLOUR, WRONG_COLOUR = (40, 90, 200), (20, 170, 60), (220, 30, 30)
CELL, FRAME, MARGIN, CAPTION, QUERY_GAP, RESULT_GAP = 96, 4, 8, 14, 16, 2


def example_box(row, column):
    """(left, top) pixel of the framed box of `save_retrieval_examples`' picture at `row` (a
    query) and `column` (0: the query, i: its i-th result)."""
    box = CELL + 2 * FRAME
    left = MARGIN + (0 if column == 0 else box + QUERY_GAP + (column - 1) * (box + RESULT_GAP))
    return left, MARGIN + CAPTION + row * (box + CAPTION)


def save_retrieval_examples(path, query_images, query_labels, result_images, result_labels):
    """Queries beside their nearest results, one row per query, to a PNG (drawn with PIL).

    The query is framed blue; each result green when it has the query's label, red otherwise;
    every image is drawn `CELL` pixels wide (nearest-neighbour when enlarged) and captioned with
    its label. `example_box` gives where each image's frame is.

    Args:
        path: the PNG to write.
        query_images: float [Q, S, S, C] in [0, 1] (C in {1, 3}).
        query_labels: int [Q].
        result_images: float [Q, K, S, S, C] in [0, 1], each query's results, best first.
        result_labels: int [Q, K].
    """
    import io

    from PIL import Image
    from PIL import ImageDraw

    num_queries, num_results = np.asarray(result_labels).shape
    box = CELL + 2 * FRAME
    right, bottom = example_box(num_queries, num_results)
    canvas = Image.new("RGB", (right + box + MARGIN, bottom + MARGIN), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, MARGIN), "query", fill="black")
    draw.text((example_box(0, 1)[0], MARGIN),
              f"top {num_results} (green: same class, red: another class)", fill="black")

    def paste(image, label, colour, row, column):
        left, top = example_box(row, column)
        pixels = np.round(np.clip(np.asarray(image, np.float64), 0.0, 1.0) * 255).astype(np.uint8)
        tile = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        resample = Image.NEAREST if tile.width < CELL else Image.BILINEAR
        draw.rectangle([left, top, left + box - 1, top + box - 1], fill=colour)
        canvas.paste(tile.convert("RGB").resize((CELL, CELL), resample),
                     (left + FRAME, top + FRAME))
        draw.text((left, top + box + 1), f"label {int(label)}", fill="black")

    for row in range(num_queries):
        paste(query_images[row], query_labels[row], QUERY_COLOUR, row, 0)
        for column in range(num_results):
            label = result_labels[row][column]
            colour = RIGHT_COLOUR if label == query_labels[row] else WRONG_COLOUR
            paste(result_images[row][column], label, colour, row, column + 1)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    filesystem.write_bytes(path, buffer.getvalue())
