"""Multi-view `tf.data` pipelines: source -> per-view augmentation -> `[B, V, S, S, C]` batches.

Training pipelines shard (per worker), cache decoded images when they fit in memory, shuffle,
repeat, draw one random int64 per element from `tf.data.Dataset.random(seed)`, split it into one
stateless seed per view, augment every view independently in a parallel map, batch with
`drop_remainder=True` and prefetch (AUTOTUNE). With a seed the whole stream (order and pixels)
is reproducible; without one each run differs. Optional class-balanced sampling puts exactly
`samples_per_class` (m) images of each of `batch_size / m` distinct classes in every batch, so
small batches always contain positives for the supervised contrastive loss.

Labels are carried as the source gives them: an int64 class id per image, or for multi-label
sources (`multilabel.MULTILABEL_SOURCES`, e.g. "voc/2007", "coco/2017", read as 0 / 1 label sets
by `multilabel.load_label_sets`) an int64 `[num_classes]` multi-hot row per image.

`make_distributed_dataset` wraps this for `tf.distribute`: it calls
`strategy.distribute_datasets_from_function`, builds one pipeline per input worker (sharded by
`InputContext.input_pipeline_id`) with per-replica batch = global batch / replicas, so one step
consumes exactly `global_batch_size` examples.
"""

import zlib

import numpy as np
import tensorflow as tf

from supcon_tf.data import augment
from supcon_tf.data import multilabel
from supcon_tf.data import sources

CACHE_AUTO_BYTES = 1 << 30  # cache="auto" keeps a source in memory up to this size


def make_dataset(source, policy, num_views, batch_size, image_size, *, training=True,
                 seed=None, split="train", data_dir=None, manual_dir=None,
                 augment_options=None, shuffle_buffer=10_000, cache="auto", repeat=None,
                 drop_remainder=None, samples_per_class=None, balance_batches=1, shard=None,
                 num_parallel_calls=tf.data.AUTOTUNE):
    """Builds batches of independently augmented views.

    Args:
        source: A `tf.data.Dataset` of `(image uint8 [H, W, C], label)` with an int label or
            an int multi-hot `[num_classes]` label set, a source name for
            `sources.load_source` ("digits", "folder:<path>", a TFDS name) or, for the
            multi-label names "voc/2007", "coco/2017", ..., `multilabel.load_label_sets`, or a
            pair of numpy arrays `(images, labels)` (`sources.from_arrays`).
        policy: Augmentation policy, one of `augment.POLICIES`.
        num_views: V >= 1, views per image.
        batch_size: B >= 1, images per batch (each with V views).
        image_size: S, the output side.
        training: Training pipelines shuffle, repeat and drop the last partial batch by default;
            evaluation pipelines keep the order and every example.
        seed: Optional int; makes order and augmentation reproducible.
        split, data_dir, manual_dir: Passed to `sources.load_source` for a named source.
        augment_options: dict of options for `augment.build_augmenter`.
        shuffle_buffer: Shuffle buffer size (training only).
        cache: True (memory), a file path, False, or "auto" (memory when the images have a
            static shape and the source fits in `CACHE_AUTO_BYTES`).
        repeat: Repeat forever; default `training`.
        drop_remainder: Drop a last partial batch; default `training`.
        samples_per_class: m for class-balanced batches (training only): each batch holds
            `batch_size // m` distinct classes with m images each; `batch_size` must be a
            multiple of m. Classes are drawn in proportion to their size, so every example is
            used about once per epoch. Every class stream filters the source, so use it on
            sources that are cached (small datasets) or cheap to read. Not for label sets.
        balance_batches: With `samples_per_class`: this many consecutive batches together hold
            distinct classes (the batches of one worker's replicas in one step).
        shard: Optional `(num_shards, index)`: this pipeline reads every num_shards-th example;
            with `samples_per_class`, every example of the classes of shard `index`
            (`assign_classes`), so that shards draw disjoint classes.
        num_parallel_calls: Parallelism of the augmentation map.

    Returns:
        A `tf.data.Dataset` of `(views float32 [B, V, S, S, C] in [0, 1], labels int64 [B])`
        (`[B, num_classes]` for label sets); `labels[i]` is the label of the image whose views
        are `views[i]`.

    Raises:
        ValueError: Bad sizes, an unknown policy/option/source, or an impossible class balance.
    """
    for name, value in (("num_views", num_views), ("batch_size", batch_size),
                        ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    augmenter = augment.build_augmenter(policy, image_size, **(augment_options or {}))
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    dataset = _as_dataset(source, split, data_dir, manual_dir)
    balanced = samples_per_class is not None
    if shard is not None:
        num_shards, index = shard
        if not 0 <= index < num_shards:
            raise ValueError(f"shard index must be in [0, {num_shards}), got {shard!r}.")
        if not balanced:
            dataset = dataset.shard(num_shards, index)
    dataset = _maybe_cache(dataset, cache)
    shard_salt = 0 if shard is None else shard[1]
    shuffle_seed = _derive_seed(seed, "shuffle", shard_salt)
    if balanced:
        if not training:
            raise ValueError("samples_per_class (class-balanced batches) is for training "
                             "pipelines; pass training=True or samples_per_class=None.")
        m = samples_per_class
        if isinstance(m, bool) or not isinstance(m, int) or m < 1 or batch_size % m:
            raise ValueError(f"samples_per_class must be a positive int dividing batch_size "
                             f"{batch_size}, got {m!r}; e.g. batch_size=64, samples_per_class=4.")
        dataset = _class_balanced(dataset, batch_size * balance_batches, samples_per_class,
                                  shuffle_buffer, shuffle_seed, class_shard=shard)
    elif training:
        dataset = dataset.shuffle(shuffle_buffer, seed=shuffle_seed,
                                  reshuffle_each_iteration=True)
    if repeat and not balanced:
        dataset = dataset.repeat()
    randoms = tf.data.Dataset.random(seed=_derive_seed(seed, "augment", shard_salt))
    dataset = tf.data.Dataset.zip((dataset, randoms))

    # No Python control flow in these functions: autograph has nothing to convert (and fails to
    # read the source of closures and lambdas, with a warning, in some environments).
    @tf.autograph.experimental.do_not_convert
    def expand_views(example, random):
        image, label = example
        view_seeds = tf.random.experimental.stateless_split(
            tf.stack([random, tf.constant(0, tf.int64)]), num_views)  # [V, 2]
        images = tf.repeat(image[None], num_views, axis=0)  # [V, H, W, C]
        # One copy of the label (a class id [] or a label set [num_classes]) per view.
        return images, view_seeds, tf.repeat(tf.cast(label, tf.int64)[None], num_views, axis=0)

    @tf.autograph.experimental.do_not_convert
    def augment_view(image, view_seed, label):
        return augmenter(image, view_seed), label  # [S, S, C], []

    # One (image, seed) element per view, so the augmentation graph is traced once whatever V
    # is; batch(V) regroups the views of each image and batch(B) makes [B, V, S, S, C]. The
    # map must keep its order (deterministic=True) or views of different images would mix.
    dataset = dataset.map(expand_views).unbatch()
    dataset = dataset.map(augment_view, num_parallel_calls=num_parallel_calls,
                          deterministic=True)
    @tf.autograph.experimental.do_not_convert
    def one_label(views, labels):
        return views, labels[0]

    dataset = dataset.batch(num_views, drop_remainder=True)
    dataset = dataset.map(one_label)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_distributed_dataset(strategy, source, policy, num_views, global_batch_size,
                             image_size, skip=0, **kwargs):
    """One pipeline per input worker, distributed by `strategy`.

    Args:
        strategy: A `tf.distribute.Strategy`.
        source, policy, num_views, image_size: As for `make_dataset`.
        global_batch_size: Images per step over all replicas; a multiple of
            `strategy.num_replicas_in_sync`.
        skip: per-replica batches each input pipeline drops first (a resumed run's position).
        **kwargs: Further `make_dataset` keywords (`seed`, `training`, ...). With several input
            workers each reads its own shard (`shard` is set from the input context) and uses
            its own seeds.

    Returns:
        A `tf.distribute.DistributedDataset` whose per-replica values are
        `(views [global_batch_size / replicas, V, S, S, C], labels [global / replicas])`.

    Raises:
        ValueError: `global_batch_size` is not a multiple of the number of replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(f"global_batch_size {global_batch_size} is not divisible by the "
                         f"{replicas} replicas; use a multiple of {replicas}.")
    if "shard" in kwargs:
        raise ValueError("make_distributed_dataset shards by input worker itself; do not "
                         "pass shard.")

    def dataset_fn(input_context):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        shard = None
        if input_context.num_input_pipelines > 1:
            shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
        if kwargs.get("samples_per_class") is not None:
            # One class-balanced group per worker and step, split over its replicas.
            kwargs["balance_batches"] = (input_context.num_replicas_in_sync
                                         // input_context.num_input_pipelines)
        dataset = make_dataset(source, policy, num_views, per_replica, image_size, shard=shard,
                               **kwargs)
        # Each pipeline feeds its replicas in turn: a global step takes one batch per replica.
        return dataset.skip(skip * input_context.num_replicas_in_sync
                            // input_context.num_input_pipelines) if skip else dataset

    return strategy.distribute_datasets_from_function(dataset_fn)


def _as_dataset(source, split, data_dir, manual_dir):
    if isinstance(source, tf.data.Dataset):
        spec = source.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"A source dataset must yield (image, label) pairs, got element "
                             f"spec {spec}; map dict examples with lambda e: (e['image'], "
                             "e['label']).")
        return source
    if isinstance(source, str) and multilabel.is_multilabel(source):
        return multilabel.load_label_sets(source, split, data_dir, manual_dir=manual_dir)
    if isinstance(source, str):
        return sources.load_source(source, split, data_dir=data_dir, manual_dir=manual_dir)
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return sources.from_arrays(*source)
    raise ValueError(f"Unknown source {source!r:.80}; pass a tf.data.Dataset of (image, label), "
                     "a source name such as 'digits', or (images, labels) arrays.")


def _derive_seed(seed, purpose, salt):
    """A distinct int32 seed per purpose and shard from the user's seed (None stays None)."""
    if seed is None:
        return None
    return zlib.crc32(f"{seed}/{purpose}/{salt}".encode()) & 0x7FFFFFFF


def _maybe_cache(dataset, cache):
    if cache is False or cache is None:
        return dataset
    if cache is True:
        return dataset.cache()
    if cache == "auto":
        image_spec = dataset.element_spec[0]
        count = int(dataset.cardinality())
        if image_spec.shape.is_fully_defined() and count > 0:
            size = count * int(np.prod(image_spec.shape)) * image_spec.dtype.size
            if size <= CACHE_AUTO_BYTES:
                return dataset.cache()
        return dataset
    if isinstance(cache, str):
        return dataset.cache(cache)
    raise ValueError(f"cache must be True, False, 'auto' or a file path, got {cache!r}.")


def _class_balanced(dataset, batch_size, samples_per_class, shuffle_buffer, seed,
                    class_shard=None):
    """Reorders an (image, label) stream so each run of `batch_size` is class balanced.

    Every group of `batch_size` consecutive elements holds `k = batch_size // m` distinct
    classes with m images each (in class blocks). The k classes of a group are drawn without
    replacement with probability proportional to their number of images (Gumbel top-k), so a
    class of n images gives about n / m blocks per epoch and every example is used about once
    per epoch, whatever the class sizes (a class holding more than 1 / k of the images can
    appear only once per group, so its images are used less); each class's images come from
    its own shuffled, repeated stream (a class smaller than m repeats images within a block).

    Args:
        class_shard: Optional `(num_shards, index)`: keep only the classes of shard `index`
            (`assign_classes`: every class to one shard, shards balanced by image count), so
            that shards draw disjoint classes and a global batch made of one group per shard
            still holds distinct classes.
    """
    m = samples_per_class  # validated by make_dataset; divides batch_size
    if dataset.element_spec[1].shape.rank:
        raise ValueError("samples_per_class (class-balanced batches) needs one class per image, "
                         "but the source has label sets; pass samples_per_class=None.")
    classes_per_batch = batch_size // m
    labels, counts = np.unique(np.fromiter(
        dataset.map(lambda image, label: label).as_numpy_iterator(), dtype=np.int64),
        return_counts=True)
    where = ""
    if class_shard is not None:
        num_shards, index = class_shard
        owned = assign_classes(counts, num_shards) == index
        labels, counts = labels[owned], counts[owned]
        where = f" on each of {num_shards} input pipelines"
    if len(labels) < classes_per_batch:
        raise ValueError(f"Class-balanced batches need {classes_per_batch} distinct classes"
                         f"{where} (batch_size {batch_size} / samples_per_class {m}) but the "
                         f"source has {len(labels)}; lower batch_size or raise "
                         "samples_per_class.")
    buffer = max(m, shuffle_buffer // len(labels))
    streams = []
    for index, label in enumerate(labels):
        stream = dataset.filter(lambda image, y, label=label: tf.equal(y, label))
        stream_seed = None if seed is None else (seed + 1 + index) & 0x7FFFFFFF
        streams.append(stream.shuffle(buffer, seed=stream_seed).repeat())
    num_classes = len(labels)
    log_weights = tf.constant(np.log(counts / counts.sum()), tf.float32)

    def batch_choice(random):
        uniform = tf.random.stateless_uniform(
            [num_classes], tf.stack([random, tf.constant(1, tf.int64)]), minval=1e-12, maxval=1.0)
        gumbel = -tf.math.log(-tf.math.log(uniform))
        chosen = tf.math.top_k(log_weights + gumbel, classes_per_batch).indices  # distinct
        return tf.cast(tf.repeat(chosen, m), tf.int64)  # [k * m], class blocks

    choices = tf.data.Dataset.random(seed=seed).map(batch_choice).unbatch()
    return tf.data.Dataset.choose_from_datasets(streams, choices)


def assign_classes(counts, num_shards):
    """Assigns every class to one of `num_shards` shards, balancing their image counts.

    Greedy: classes by decreasing count (ties by index), each to the shard with the fewest
    images so far (ties to the lowest shard). Deterministic, so every worker computes the same.

    Args:
        counts: int [num_classes], images per class.
        num_shards: number of shards (input pipelines).

    Returns:
        int [num_classes]: the shard of each class.
    """
    counts = np.asarray(counts)
    shard_of = np.zeros(len(counts), np.int64)
    totals = np.zeros(num_shards, np.int64)
    for index in np.lexsort((np.arange(len(counts)), -counts)):
        shard = int(np.argmin(totals))
        shard_of[index] = shard
        totals[shard] += counts[index]
    return shard_of
